"""Unit tests of the emulator's encoded-query compiler, evaluated on a real SQLite table."""

from __future__ import annotations

import sqlite3

import pytest

from snfs.emulator.encoded_query import (
    Condition,
    Field,
    and_compiled,
    compile_query,
    parse,
    parse_condition,
    split_terms,
)

ROWS = [
    # name, file_name, size, state, table
    ("a", "readme.txt", "26", "available", "incident"),
    ("b", "notes.txt", "100", "pending", "incident"),
    ("c", "a^b.txt", "9", "available", "problem"),
    ("d", "100% done #1.txt", "1000", "available", "ZZ_YYincident"),
    ("e", "", "0", "available", "hr_case"),
    ("f", "under_score.TXT", "55", "pending", "kb_knowledge"),
]
FIELDS = {
    "name": Field("name"),
    "file_name": Field("file_name"),
    "size_bytes": Field("size_bytes", True),
    "state": Field("state"),
    "table_name": Field("table_name"),
}


@pytest.fixture(scope="module")
def db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE t (name TEXT, file_name TEXT, size_bytes TEXT, state TEXT, table_name TEXT)"
    )
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", ROWS)
    return conn


def run(db: sqlite3.Connection, query: str, strict: bool = False) -> list[str]:
    q = compile_query(query, FIELDS.get, strict)
    order = ", ".join(q.order_by + ["name"])
    return [
        r[0] for r in db.execute(f"SELECT name FROM t WHERE {q.where} ORDER BY {order}", q.params)
    ]


# -- splitting and parsing ----------------------------------------------------------------------


def test_split_terms_plain_and_escaped_caret() -> None:
    assert split_terms("a=1^b=2") == ["a=1", "b=2"]
    assert split_terms("file_name=a^^b.txt") == ["file_name=a^b.txt"]
    assert split_terms("x=a^^^y=2") == ["x=a^", "y=2"]
    assert split_terms("x=^^^^") == ["x=^^"]
    assert split_terms("") == [""]


@pytest.mark.parametrize(
    "term,expected",
    [
        ("state=available", Condition("state", "=", "available")),
        ("state!=available", Condition("state", "!=", "available")),
        ("file_nameLIKEnote", Condition("file_name", "LIKE", "note")),
        ("file_nameNOT LIKEnote", Condition("file_name", "NOT LIKE", "note")),
        ("file_nameSTARTSWITHread", Condition("file_name", "STARTSWITH", "read")),
        ("file_nameENDSWITH.txt", Condition("file_name", "ENDSWITH", ".txt")),
        ("nameINa,b", Condition("name", "IN", "a,b")),
        ("nameNOT INa,b", Condition("name", "NOT IN", "a,b")),
        ("file_nameISEMPTY", Condition("file_name", "ISEMPTY", "")),
        ("file_nameISNOTEMPTY", Condition("file_name", "ISNOTEMPTY", "")),
        ("size_bytes<=10", Condition("size_bytes", "<=", "10")),
        ("size_bytes>=10", Condition("size_bytes", ">=", "10")),
        ("size_bytes<10", Condition("size_bytes", "<", "10")),
        ("size_bytes>10", Condition("size_bytes", ">", "10")),
        ("file_name=a=b", Condition("file_name", "=", "a=b")),
        ("file_name=", Condition("file_name", "=", "")),
        ("caller_id.name=Bob", Condition("caller_id.name", "=", "Bob")),
    ],
)
def test_parse_condition(term: str, expected: Condition) -> None:
    assert parse_condition(term) == expected


def test_parse_condition_rejects_garbage() -> None:
    assert parse_condition("nonsense") is None
    assert parse_condition("=value") is None


def test_parse_structure_or_binds_tighter_than_and() -> None:
    p = parse("a=1^b=2^ORc=3^NQd=4^ORDERBYa^ORDERBYDESCb")
    assert [[[c.field for c in term] for term in g] for g in p.groups] == [
        [["a"], ["b", "c"]],
        [["d"]],
    ]
    assert [(o.field, o.descending) for o in p.orders] == [("a", False), ("b", True)]


# -- evaluation -----------------------------------------------------------------------------


def test_empty_query_matches_all(db: sqlite3.Connection) -> None:
    assert run(db, "") == list("abcdef")


@pytest.mark.parametrize(
    "query,expected",
    [
        ("state=available", ["a", "c", "d", "e"]),
        ("state!=available", ["b", "f"]),
        ("file_nameLIKEnote", ["b"]),
        ("file_nameLIKE.TXT", ["a", "b", "c", "d", "f"]),  # LIKE is case-insensitive
        ("file_nameNOT LIKEnote", ["a", "c", "d", "e", "f"]),
        ("file_nameSTARTSWITHread", ["a"]),
        ("file_nameENDSWITH.txt", ["a", "b", "c", "d", "f"]),
        ("nameINa,c,zz", ["a", "c"]),
        ("nameNOT INa,c", ["b", "d", "e", "f"]),
        ("file_nameISEMPTY", ["e"]),
        ("file_nameISNOTEMPTY", ["a", "b", "c", "d", "f"]),
        ("size_bytes<26", ["c", "e"]),  # numeric, not text, comparison
        ("size_bytes>100", ["d"]),
        ("size_bytes<=26", ["a", "c", "e"]),
        ("size_bytes>=100", ["b", "d"]),
        ("table_name=incident", ["a", "b"]),
        ("table_nameSTARTSWITHZZ_YY", ["d"]),  # _ is literal, not a LIKE wildcard
        ("file_nameLIKE%", ["d"]),  # % is literal
        ("file_nameLIKE_", ["f"]),
    ],
)
def test_operators(db: sqlite3.Connection, query: str, expected: list[str]) -> None:
    assert run(db, query) == expected


def test_escaped_caret_in_value(db: sqlite3.Connection) -> None:
    assert run(db, "file_name=a^^b.txt") == ["c"]
    assert run(db, "file_nameLIKE^^") == ["c"]
    assert run(db, "file_name=a^^b.txt^state=available") == ["c"]


def test_and_or_precedence(db: sqlite3.Connection) -> None:
    # a AND (b OR c): state=pending AND (table=incident OR table=kb_knowledge)
    assert run(db, "state=pending^table_name=incident^ORtable_name=kb_knowledge") == ["b", "f"]
    # (state=available OR name=b) AND table=incident
    assert run(db, "state=available^ORname=b^table_name=incident") == ["a", "b"]


def test_nq_separates_groups(db: sqlite3.Connection) -> None:
    assert run(db, "table_name=problem^NQstate=pending^table_name=incident") == ["b", "c"]
    assert run(db, "name=a^NQname=b^NQname=c") == ["a", "b", "c"]


def test_orderby(db: sqlite3.Connection) -> None:
    assert run(db, "ORDERBYsize_bytes") == ["e", "c", "a", "f", "b", "d"]
    assert run(db, "ORDERBYDESCsize_bytes") == ["d", "b", "f", "a", "c", "e"]
    # readme.txt > a^b.txt > 100% done #1.txt > ""
    assert run(db, "state=available^ORDERBYDESCfile_name") == ["a", "c", "d", "e"]
    assert run(db, "ORDERBYstate^ORDERBYDESCname") == ["e", "d", "c", "a", "f", "b"]


def test_unknown_fields_are_ignored(db: sqlite3.Connection) -> None:
    assert run(db, "bogus=1") == list("abcdef")
    assert run(db, "bogus=1^name=a") == ["a"]
    assert run(db, "name=a^ORbogus=1") == ["a"]
    assert run(db, "ORDERBYbogus^name=a") == ["a"]
    assert run(db, "garbage^name=b") == ["b"]


def test_unknown_fields_return_no_rows_when_strict(db: sqlite3.Connection) -> None:
    assert run(db, "bogus=1", strict=True) == []
    assert run(db, "bogus=1^name=a", strict=True) == []
    assert run(db, "name=a", strict=True) == ["a"]


def test_values_are_bound_never_interpolated(db: sqlite3.Connection) -> None:
    evil = "x' OR '1'='1"
    q = compile_query(f"name={evil}", FIELDS.get)
    assert evil not in q.where and q.params == [evil]
    assert run(db, f"name={evil}") == []
    assert run(db, "nameIN') OR 1=1 --") == []


def test_and_compiled(db: sqlite3.Connection) -> None:
    q = and_compiled(
        compile_query("state=available^NQname=b", FIELDS.get),
        compile_query("table_name=incident", FIELDS.get),
    )
    rows = [r[0] for r in db.execute(f"SELECT name FROM t WHERE {q.where} ORDER BY name", q.params)]
    assert rows == ["a", "b"]
