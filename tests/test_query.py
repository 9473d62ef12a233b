from __future__ import annotations

import pytest

from snfs.backends.servicenow import query as q
from snfs.errors import InvalidInput

SID = "0123456789abcdef0123456789abcdef"


def test_escape_value() -> None:
    assert q.escape_value("a^b") == "a^^b"
    assert q.escape_value("^^") == "^^^^"
    assert q.escape_value("plain") == "plain"


def test_term_escapes_and_validates() -> None:
    assert (
        q.term("file_name", "=", "x^ORtable_name!=incident")
        == "file_name=x^^ORtable_name!=incident"
    )
    assert q.term("file_name", "STARTSWITH", "ab") == "file_nameSTARTSWITHab"
    assert q.term("file_name", "NOT LIKE", "ab") == "file_nameNOT LIKEab"
    assert q.term("table_sys_id.number", "=", "INC1") == "table_sys_id.number=INC1"
    assert q.term("hash", "ISEMPTY") == "hashISEMPTY"
    for op in q.OPERATORS:
        if op not in ("ISEMPTY", "ISNOTEMPTY"):
            assert q.term("f", op, "v") == f"f{op}v"
    with pytest.raises(InvalidInput):
        q.term("file_name^ORx", "=", "a")
    with pytest.raises(InvalidInput):
        q.term("File", "=", "a")
    with pytest.raises(InvalidInput):
        q.term("file_name", "ANYTHING", "")
    with pytest.raises(InvalidInput):
        q.term("file_name", "=^OR", "")
    with pytest.raises(InvalidInput):
        q.term("file_name", "ISEMPTY", "x")
    with pytest.raises(InvalidInput):
        q.term("file_name", "=", "a\nb")


def test_all_of_and_order_by() -> None:
    assert q.all_of("a=1", "", "b=2") == "a=1^b=2"
    assert q.order_by("sys_created_on") == "ORDERBYsys_created_on"
    assert q.order_by("sys_id", desc=True) == "ORDERBYDESCsys_id"
    with pytest.raises(InvalidInput):
        q.order_by("x^y")


def test_validate_table() -> None:
    for ok in ("incident", "sys_attachment", "x_1540387_course_s_course", "ZZ_YYincident", "u_2"):
        assert q.validate_table(ok) == ok
    for bad in (
        "",
        "Incident",
        "inc/../x",
        "inc?x",
        "a" * 81,
        "ZZ_YY",
        "zz_yyIncident",
        "incident^ORx",
        "inc ident",
        "ZZ_YYZZ_YYx",
        None,
    ):
        with pytest.raises(InvalidInput):
            q.validate_table(bad)  # type: ignore[arg-type]


def test_sys_id() -> None:
    assert q.validate_sys_id(SID) == SID
    assert q.is_sys_id(SID)
    for bad in ("", SID.upper(), SID[:-1], SID + "0", "g" * 32, "../" + SID[3:], None, 5):
        assert not q.is_sys_id(bad)
        with pytest.raises(InvalidInput):
            q.validate_sys_id(bad)  # type: ignore[arg-type]


def test_attachment_queries() -> None:
    assert q.attachments_of_record("incident", SID) == (
        f"table_name=incident^table_sys_id={SID}^ORDERBYsys_created_on^ORDERBYsys_id"
    )
    assert q.attachments_of_table("ZZ_YYincident") == (
        "table_name=ZZ_YYincident^ORDERBYsys_created_on^ORDERBYsys_id"
    )
    with pytest.raises(InvalidInput):
        q.attachments_of_record("incident", "x")
    with pytest.raises(InvalidInput):
        q.attachments_of_table("incident^NQtable_name!=x")
