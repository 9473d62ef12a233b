"""Encoded queries (`sysparm_query`) and the names that go into URLs.

This is the only module that builds a `sysparm_query`. Every value is escaped (`^` -> `^^`,
the instance's only escape sequence), every field name and operator is checked against a
fixed grammar, so a file name such as `x^ORtable_name!=incident` stays one value and can never
add a condition of its own.
"""

from __future__ import annotations

import re

from snfs.errors import InvalidInput

__all__ = [
    "OPERATORS",
    "escape_value",
    "term",
    "all_of",
    "order_by",
    "validate_table",
    "validate_sys_id",
    "is_sys_id",
    "validate_field",
    "attachments_of_record",
    "attachments_of_table",
    "attachments_of_records",
    "records_by_sys_id",
    "and_each_group",
    "validate_scope",
    "decode_scope_name",
]

# Operators of the encoded-query grammar that snfs uses. Order matters for nothing here.
OPERATORS = frozenset(
    {
        "=",
        "!=",
        "LIKE",
        "NOT LIKE",
        "STARTSWITH",
        "ENDSWITH",
        "IN",
        "NOT IN",
        "ISEMPTY",
        "ISNOTEMPTY",
        "<",
        ">",
        "<=",
        ">=",
    }
)
_VALUELESS = frozenset({"ISEMPTY", "ISNOTEMPTY"})

_FIELD_RE = re.compile(r"[a-z0-9_.]+")
_TABLE_RE = re.compile(r"(?:ZZ_YY)?[a-z0-9_]+")
_SYS_ID_RE = re.compile(r"[0-9a-f]{32}")
MAX_TABLE_LEN = 80


def escape_value(v: str) -> str:
    """Escape a value for an encoded query: `^` is the term separator, `^^` a literal `^`."""
    if not isinstance(v, str):
        raise InvalidInput(f"query value must be a string, not {type(v).__name__}")
    return v.replace("^", "^^")


def validate_field(field: str) -> str:
    if not isinstance(field, str) or not _FIELD_RE.fullmatch(field):
        raise InvalidInput(f"invalid field name {field!r}")
    return field


def term(field: str, op: str, value: str = "") -> str:
    """One condition `<field><op><value>`, with the value escaped."""
    validate_field(field)
    if op not in OPERATORS:
        raise InvalidInput(f"unsupported query operator {op!r}")
    if op in _VALUELESS:
        if value:
            raise InvalidInput(f"operator {op} takes no value")
        return f"{field}{op}"
    value = escape_value(value)
    if "\n" in value or "\r" in value or "\x00" in value:
        # Not part of the grammar, but nothing good can come of them in a query.
        raise InvalidInput("query value contains a control character")
    return f"{field}{op}{value}"


def all_of(*terms: str) -> str:
    """AND of terms (already built with `term`/`order_by`); empty terms are skipped."""
    return "^".join(t for t in terms if t)


def order_by(field: str, desc: bool = False) -> str:
    validate_field(field)
    return f"ORDERBY{'DESC' if desc else ''}{field}"


def validate_table(name: str) -> str:
    """A table name as it may appear in a URL: `[a-z0-9_]+`, optionally `ZZ_YY`-prefixed."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_TABLE_LEN
        or not _TABLE_RE.fullmatch(name)
    ):
        raise InvalidInput(f"invalid table name {name!r}")
    return name


def is_sys_id(s: object) -> bool:
    return isinstance(s, str) and _SYS_ID_RE.fullmatch(s) is not None


def validate_sys_id(s: str) -> str:
    if not is_sys_id(s):
        raise InvalidInput(f"invalid sys_id {s!r}")
    return s


def _stable_order() -> str:
    return all_of(order_by("sys_created_on"), order_by("sys_id"))


def attachments_of_record(table: str, sys_id: str) -> str:
    """Every attachment of one record, in a stable order (creation time, then sys_id)."""
    return all_of(
        term("table_name", "=", validate_table(table)),
        term("table_sys_id", "=", validate_sys_id(sys_id)),
        _stable_order(),
    )


def attachments_of_table(table: str) -> str:
    """Every attachment of one table, in a stable order so that paging sees each once."""
    return all_of(term("table_name", "=", validate_table(table)), _stable_order())


def attachments_of_table_by_record(table: str) -> str:
    """A table's attachments for the keyset pager (which adds its own key terms and order)."""
    return term("table_name", "=", validate_table(table))


def attachments_of_records(table: str, sys_ids: list[str]) -> str:
    """The attachments of a batch of records (`table_sys_idIN...`), grouped by record."""
    ids = ",".join(validate_sys_id(s) for s in sys_ids)
    return all_of(
        term("table_name", "=", validate_table(table)),
        term("table_sys_id", "IN", ids),
        order_by("table_sys_id"),
        order_by("sys_id"),
    )


def records_by_sys_id(sys_ids: list[str]) -> str:
    """Records of a batch of sys_ids (for their numbers)."""
    return term("sys_id", "IN", ",".join(validate_sys_id(s) for s in sys_ids))


def _split(text: str, sep: str) -> list[str]:
    """Split on `^<sep>` where that `^` is a separator, not the second half of an escaped `^^`."""
    parts: list[str] = []
    cur, i, n = [], 0, len(text)
    while i < n:
        if text[i] == "^" and text.startswith("^^", i):
            cur.append("^^")
            i += 2
        elif text[i] == "^" and text.startswith(sep, i + 1):
            parts.append("".join(cur))
            cur, i = [], i + 1 + len(sep)
        else:
            cur.append(text[i])
            i += 1
    parts.append("".join(cur))
    return parts


def _without_order(group: str) -> str:
    return "^".join(t for t in _split(group, "") if t and not t.startswith("ORDERBY"))


def and_each_group(base: str, terms: list[str], orders: list[str]) -> str:
    """`base AND terms`, ordered by `orders` only.

    An encoded query has no parentheses: `a^NQb^c` means `a OR (b AND c)`. So the terms are
    appended to every `^NQ` group of `base` (`(a^c)^NQ(b^c)`), and any ORDERBY of `base` is
    dropped (the pager's order must be the only one)."""
    groups = [_without_order(g) for g in _split(base, "NQ")] if base else [""]
    joined = "^NQ".join(all_of(g, *terms) for g in groups)
    return all_of(joined, *orders)


def validate_scope(text: str) -> str:
    """A user's encoded query used as a scope (`--scope`, a `.query` directory name).

    It is a query by intent, so it is not escaped into one value; it must not carry control
    characters, and `and_each_group` later keeps it from loosening the pager's own terms."""
    if not isinstance(text, str) or not text.strip("^"):
        raise InvalidInput("a scope must be a non-empty encoded query")
    if any(c in text for c in "\n\r\x00"):
        raise InvalidInput("a scope contains a control character")
    if "RLQUERY" in text:
        raise InvalidInput("a scope cannot use RLQUERY (it nests queries the pager cannot scope)")
    return text


def decode_scope_name(name: str) -> str:
    """A `.query/<name>` directory name to its encoded query: percent-decoded (UTF-8), so a
    `/`, which no file name can hold, is written `%2F` and a literal `%` is `%25`."""
    from urllib.parse import unquote

    try:
        return validate_scope(unquote(name, errors="strict"))
    except UnicodeDecodeError:
        raise InvalidInput(f"{name!r} is not valid percent-encoded UTF-8") from None
