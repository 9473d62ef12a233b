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
