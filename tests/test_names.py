"""The naming rules of snfs.names: reversible encoding, duplicates, length."""

import os
from datetime import UTC, datetime, timedelta

import pytest

from snfs import names
from snfs.temp_names import is_temp

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "name",
    [
        "plain.txt",
        "reports/2026.txt",
        "a/b/c",
        ".",
        "..",
        "...",
        "nul\0byte",
        "x\uff0fy",
        "\u201b",
        "end\u201b",
        "\u201b\uff0f",
        "100% done #1.txt",
        "a^b.txt",
        "résumé.txt",
        "\uff0e",
        "\uff0e\uff0e",
        "\u2400",
        "/",
        "//",
        "",
        "lone\ud800surrogate.txt",
        "\udc80\udfff",
        "\u201b\U000f0000",
        "\U000f0000",
    ],
)
def test_encode_is_reversible_and_posix_safe(name: str) -> None:
    shown = names.encode(name)
    assert "/" not in shown and "\0" not in shown and shown not in (".", "..")
    assert shown and os.fsencode(shown).decode("utf-8") == shown  # non-empty, valid UTF-8
    assert names.decode(shown) == name


def test_row15_empty_and_surrogate_names_do_not_break_a_listing() -> None:
    """One attachment named "" or holding a lone surrogate used to make the whole record
    listing fail (UnicodeEncodeError; a zero-length dirent is EIO for the whole readdir)."""
    items = [n("a" * 32, "", 1), n("b" * 32, "x\ud800.txt", 2), n("c" * 32, "ok.txt", 3)]
    got = names.assign_names(items)
    assert sorted(got.values()) == ["a" * 32, "b" * 32, "c" * 32]
    for shown in got:
        assert shown and len(os.fsencode(shown)) <= names.NAME_MAX
        shown.encode("utf-8")  # strict: no surrogate reaches the kernel


def test_new_names_must_be_text() -> None:
    assert not names.valid_new_name("")
    assert not names.valid_new_name(names.ESCAPE)  # would be an empty instance name
    assert not names.valid_new_name(os.fsdecode(b"bad\xff.txt"))  # not UTF-8
    assert names.valid_new_name("résumé.txt")


def test_plain_names_are_unchanged() -> None:
    for n in ("report.pdf", "100% done #1.txt", "a^b.txt", "résumé.txt", "my file.txt"):
        assert names.encode(n) == n


def test_distinct_names_stay_distinct() -> None:
    samples = ["a/b", "a\uff0fb", "a\u201b\uff0fb", ".", "\uff0e", "..", "\uff0e\uff0e"]
    assert len({names.encode(s) for s in samples}) == len(samples)


def n(sys_id: str, name: str, minutes: int) -> names.Named:
    return names.Named(sys_id, name, T0 + timedelta(minutes=minutes))


def test_duplicates_newest_keeps_plain_name() -> None:
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    got = names.assign_names([n(a, "test", 1), n(b, "test", 3), n(c, "test", 2)])
    assert got["test"] == b
    assert got["test~cccccccc"] == c and got["test~aaaaaaaa"] == a
    # Deterministic: the same set in another order names the same way.
    assert names.assign_names([n(c, "test", 2), n(b, "test", 3), n(a, "test", 1)]) == got


def test_duplicate_tag_goes_before_extension_and_is_unique() -> None:
    a, b = "1234567890abcdef" + "0" * 16, "1234567890abcdef" + "1" * 16
    got = names.assign_names([n(a, "r.pdf", 2), n(b, "r.pdf", 1), n("f" * 32, "r~12345678.pdf", 0)])
    assert got["r.pdf"] == a
    assert got["r~12345678.pdf"] == "f" * 32  # a real name is never stolen
    assert got["r~123456789.pdf"] == b  # so the tag grows until unique


def test_reserved_names_are_not_given_away() -> None:
    got = names.assign_names([n("a" * 32, "x.txt", 1)], reserved={"x.txt"})
    assert "x.txt" not in got and got["x~aaaaaaaa.txt"] == "a" * 32


def test_long_names_fit_name_max() -> None:
    long = "é" * 200 + ".txt"  # 404 bytes
    got = names.assign_names([n("a" * 32, long, 1), n("b" * 32, long, 2)])
    assert len(got) == 2
    for shown in got:
        assert len(shown.encode()) <= names.NAME_MAX
        assert shown.endswith(".txt")


@pytest.mark.parametrize(
    "name,temp",
    [
        (".report.pdf.Xy12Ab", True),
        (".report.pdf.swp", True),
        (".notes.txt.swx", True),  # row 11: vim's probe in ex mode
        (".notes.txt.swa", True),
        (".logo.svg", False),
        ("4913", True),
        ("notes.txt~", True),
        (".goutputstream-ABC123", True),
        (".~lock.budget.ods#", True),
        ("lu12345abc.tmp", True),
        ("report.pdf", False),
        ("budget.ods", False),
        ("README", False),
        ("a^b.txt", False),
    ],
)
def test_temp_names(name: str, temp: bool) -> None:
    assert is_temp(name) is temp
