"""ServiceNow encoded queries (`sysparm_query`) compiled to a SQLite WHERE clause.

Grammar (as documented for c_EncodedQueryStrings / r_OpAvailableFiltersQueries):

    query     := group ( "^NQ" group )*          -- OR of whole groups
    group     := term ( "^" term )*               -- AND of terms
    term      := cond ( "^OR" cond )*             -- ^OR binds tighter than ^
    cond      := <field><op><value> | ORDERBY<field> | ORDERBYDESC<field>

`^^` inside a value is a literal caret. Values are never interpolated into SQL: every value
becomes a bound parameter. Field names are resolved by the caller (`FieldResolver`), which maps a
known field to a SQL expression and returns None for unknown fields; unknown fields make a
condition invalid, and invalid conditions are dropped (ServiceNow's default) or make the whole
query match nothing (`glide.invalid_query.returns_no_rows=true`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Longest first, so "NOT LIKE" wins over "LIKE" would-be prefixes and "<=" over "<".
OPERATORS: tuple[str, ...] = (
    "ISNOTEMPTY",
    "ISEMPTY",
    "EMPTYSTRING",
    "ANYTHING",
    "STARTSWITH",
    "ENDSWITH",
    "NOT LIKE",
    "NOT IN",
    "NSAMEAS",
    "SAMEAS",
    "BETWEEN",
    "LIKE",
    "IN",
    "!=",
    "<=",
    ">=",
    "=",
    "<",
    ">",
)
UNARY = frozenset({"ISEMPTY", "ISNOTEMPTY", "ANYTHING", "EMPTYSTRING"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_NUMBER = re.compile(r"-?\d+(\.\d+)?\Z")


@dataclass(frozen=True)
class Field:
    """A resolved field: its SQL expression (never NULL) and whether it compares as a number."""

    sql: str
    numeric: bool = False


FieldResolver = Callable[[str], "Field | None"]


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str


@dataclass(frozen=True)
class Order:
    field: str
    descending: bool


@dataclass
class ParsedQuery:
    # groups[i] is an AND-list of terms; each term is an OR-list of conditions.
    groups: list[list[list[Condition]]] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # terms that did not parse


@dataclass
class CompiledQuery:
    where: str  # "1" when there is no filter
    params: list[object]
    order_by: list[str]  # SQL ORDER BY items, empty when the query has no ORDERBY
    had_invalid: bool


def split_terms(query: str) -> list[str]:
    """Split on single `^`; `^^` is a literal caret inside a term."""
    terms: list[str] = []
    cur: list[str] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch == "^":
            if i + 1 < n and query[i + 1] == "^":
                cur.append("^")
                i += 2
                continue
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    terms.append("".join(cur))
    return terms


def parse_condition(term: str) -> Condition | None:
    """`<field><op><value>`: the field is the shortest identifier prefix followed by an operator."""
    for j in range(1, len(term) + 1):
        rest = term[j:]
        for op in OPERATORS:
            if rest.startswith(op) and _IDENT.match(term[:j]):
                value = "" if op in UNARY else rest[len(op) :]
                return Condition(term[:j], op, value)
    return None


def parse(query: str) -> ParsedQuery:
    parsed = ParsedQuery()
    group: list[list[Condition]] = []
    for raw in split_terms(query or ""):
        term, is_or = raw, False
        if term.startswith("ORDERBYDESC"):
            _add_order(parsed, term[len("ORDERBYDESC") :], True)
            continue
        if term.startswith("ORDERBY"):
            _add_order(parsed, term[len("ORDERBY") :], False)
            continue
        if term.startswith("NQ"):
            if group:
                parsed.groups.append(group)
            group, term = [], term[2:]
        elif term.startswith("OR"):
            is_or, term = True, term[2:]
        if term in ("", "EQ"):  # empty term, or the UI's end-of-query marker
            continue
        cond = parse_condition(term)
        if cond is None:
            parsed.invalid.append(raw)
            continue
        if is_or and group:
            group[-1].append(cond)
        else:
            group.append([cond])
    if group:
        parsed.groups.append(group)
    return parsed


def _add_order(parsed: ParsedQuery, name: str, descending: bool) -> None:
    if _IDENT.match(name):
        parsed.orders.append(Order(name, descending))
    else:
        parsed.invalid.append(("ORDERBYDESC" if descending else "ORDERBY") + name)


def compile_query(
    query: str, resolve: FieldResolver, invalid_returns_no_rows: bool = False
) -> CompiledQuery:
    parsed = parse(query)
    params: list[object] = []
    invalid = bool(parsed.invalid)
    group_sqls: list[str] = []
    for group in parsed.groups:
        term_sqls: list[str] = []
        for term in group:
            alts: list[str] = []
            for cond in term:
                sql = compile_condition(cond, resolve, params)
                if sql is None:
                    invalid = True
                else:
                    alts.append(sql)
            if alts:  # a term whose every alternative is invalid is dropped
                term_sqls.append(alts[0] if len(alts) == 1 else "(" + " OR ".join(alts) + ")")
        # A group whose terms were all dropped matches everything, as an empty query does.
        group_sqls.append(" AND ".join(term_sqls) if term_sqls else "1")
    order_by: list[str] = []
    for order in parsed.orders:
        fld = resolve(order.field)
        if fld is None:
            invalid = True
            continue
        expr = f"CAST({fld.sql} AS REAL)" if fld.numeric else fld.sql
        order_by.append(expr + (" DESC" if order.descending else " ASC"))
    if invalid and invalid_returns_no_rows:
        return CompiledQuery("0", [], order_by, True)
    if not group_sqls:
        where = "1"
    elif len(group_sqls) == 1:
        where = group_sqls[0]
    else:
        where = " OR ".join(f"({g})" for g in group_sqls)
    return CompiledQuery(where, params, order_by, invalid)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def compile_condition(cond: Condition, resolve: FieldResolver, params: list[object]) -> str | None:
    fld = resolve(cond.field)
    if fld is None:
        return None
    expr, op, value = fld.sql, cond.op, cond.value
    if op == "ISEMPTY":
        return f"({expr} = '')"
    if op == "ISNOTEMPTY":
        return f"({expr} <> '')"
    if op == "ANYTHING":
        return "1"
    if op == "EMPTYSTRING":
        return f"({expr} = '')"
    if op in ("=", "SAMEAS"):
        params.append(value)
        return f"({expr} = ?)"
    if op in ("!=", "NSAMEAS"):
        params.append(value)
        return f"({expr} <> ?)"
    if op in ("LIKE", "NOT LIKE", "STARTSWITH", "ENDSWITH"):
        pattern = _like_escape(value)
        pattern = {"STARTSWITH": pattern + "%", "ENDSWITH": "%" + pattern}.get(
            op, "%" + pattern + "%"
        )
        params.append(pattern)
        neg = "NOT " if op == "NOT LIKE" else ""
        return f"({expr} {neg}LIKE ? ESCAPE '\\')"
    if op in ("IN", "NOT IN"):
        items = value.split(",")
        params.extend(items)
        marks = ",".join("?" for _ in items)
        neg = "NOT " if op == "NOT IN" else ""
        return f"({expr} {neg}IN ({marks}))"
    if op == "BETWEEN":
        if "@" not in value:
            return None
        low, high = value.split("@", 1)
        lhs = _comparable(fld, low, high)
        params.extend([_coerce(fld, low, high, low), _coerce(fld, low, high, high)])
        return f"({lhs} BETWEEN ? AND ?)"
    if op in ("<", ">", "<=", ">="):
        params.append(_coerce(fld, value, value, value))
        return f"({_comparable(fld, value)} {op} ?)"
    return None


def _numeric(fld: Field, *values: str) -> bool:
    # Numeric fields compare as numbers when the value is a number; everything else (dates in
    # "YYYY-MM-DD HH:MM:SS", strings) compares as text, which orders dates correctly.
    return fld.numeric and all(_NUMBER.match(v) for v in values)


def _comparable(fld: Field, *values: str) -> str:
    return f"CAST({fld.sql} AS REAL)" if _numeric(fld, *values) else fld.sql


def _coerce(fld: Field, a: str, b: str, value: str) -> object:
    return float(value) if _numeric(fld, a, b) else value


def and_compiled(a: CompiledQuery, b: CompiledQuery) -> CompiledQuery:
    """Both filters (e.g. sysparm_query AND the Table API's name=value pairs); a's ORDERBY first."""
    return CompiledQuery(
        f"({a.where}) AND ({b.where})",
        [*a.params, *b.params],
        a.order_by + b.order_by,
        a.had_invalid or b.had_invalid,
    )
