"""The soak's check (tests/soak/model.py), kernel-free: each promise it guards, broken on
purpose, is reported as the right kind; what a failed call may leave is accepted."""

from __future__ import annotations

from tests.soak.model import (
    ABSENT,
    DUPLICATE,
    HALF_DONE,
    LOST,
    MISPLACED,
    RESURRECTED,
    STALE,
    STRAY,
    TORN,
    Group,
    check,
)

REC = "r" * 32
V1, V2, V3, JUNK = "1" * 64, "2" * 64, "3" * 64, "f" * 64
LABELS = {V1: "w0 write #1", V2: "w0 write #2", V3: "w1 write #1"}


def kinds(g: Group, on: list[tuple[str, str]], blocked: frozenset = frozenset()) -> list[str]:
    return [v.kind for v in check("incident", [g], {REC: on}, LABELS, blocked)]


def group() -> Group:
    return Group(REC, ["a.txt", "b.txt", ".a.txt.soak00"], scratch=[".a.txt.soak00"])


def test_a_closed_file_must_be_there_exactly_once_with_its_bytes() -> None:
    g = group()
    g.certain("a.txt", V1, "close ok")
    g.certain("a.txt", V2, "close ok")
    assert kinds(g, [("a.txt", V2)]) == []
    assert kinds(g, []) == [LOST]
    assert kinds(g, [("a.txt", V1), ("a.txt", V2)]) == [DUPLICATE]
    assert kinds(g, [("a.txt", V1)]) == [STALE]  # the last close lost
    assert kinds(g, [("a.txt", JUNK)]) == [TORN]
    assert kinds(g, [("a.txt", V3)]) == [MISPLACED]  # another name's bytes


def test_removed_means_gone_and_unknown_names_are_reported() -> None:
    g = group()
    g.certain("a.txt", V1, "close ok")
    g.certain("a.txt", ABSENT, "rm ok")
    assert kinds(g, []) == []
    assert kinds(g, [("a.txt", V1)]) == [RESURRECTED]
    assert kinds(g, [("b~bb17e1f6", V1)]) == [STRAY]


def test_a_failed_call_may_have_happened_or_not() -> None:
    g = group()
    g.certain("a.txt", V1, "close ok")
    g.maybe("a.txt", {V2}, "close EIO")  # kept and retried: may arrive, or not yet replaced
    assert kinds(g, [("a.txt", V1)]) == []
    assert kinds(g, [("a.txt", V2)]) == []
    assert kinds(g, []) == [LOST]  # neither is no answer
    g.maybe("a.txt", {ABSENT}, "rm EIO")
    assert kinds(g, []) == []


def test_a_failed_rename_is_done_or_not_as_a_whole() -> None:
    """Rows 11/12 of issue 18: a copy-then-delete rename that stops half way leaves a's bytes
    under both names. Each name alone is a possible outcome; together they are not."""
    g = group()
    g.certain("a.txt", V1, "close ok")
    g.certain("b.txt", V2, "close ok")
    g.renamed("a.txt", "b.txt", False, "mv a.txt b.txt: EIO")
    assert kinds(g, [("a.txt", V1), ("b.txt", V2)]) == []  # not done
    assert kinds(g, [("b.txt", V1)]) == []  # done
    assert kinds(g, [("a.txt", V1), ("b.txt", V1)]) == [HALF_DONE]  # copied, never finished
    assert kinds(g, [("b.txt", V1), ("b.txt", V2)]) == [DUPLICATE]
    assert kinds(g, [("a.txt", V1)]) == [LOST]  # b's own bytes went, a's did not come
    g.renamed("a.txt", "b.txt", True, "mv a.txt b.txt: ok")  # the retry succeeds
    assert g.possible("a.txt") == {ABSENT} and g.possible("b.txt") == {V1}
    assert kinds(g, [("a.txt", V1), ("b.txt", V1)]) == [RESURRECTED]


def test_blocked_names_may_keep_an_older_version_but_never_torn_bytes() -> None:
    g = group()
    g.certain("a.txt", V1, "close ok")
    g.certain("a.txt", V2, "close ok (write-back: journaled)")
    blocked = frozenset({(REC, "a.txt")})
    assert kinds(g, [("a.txt", V1)], blocked) == []  # shown as not sent
    assert kinds(g, [("a.txt", JUNK)], blocked) == [TORN]
    assert kinds(g, [("a.txt", V1), ("a.txt", V2)], blocked) == [DUPLICATE]


def test_a_scratch_name_may_stay_local() -> None:
    g = group()
    g.certain(".a.txt.soak00", V1, "close ok")
    assert kinds(g, []) == []
    assert kinds(g, [(".a.txt.soak00", V1)]) == []
    assert kinds(g, [(".a.txt.soak00", JUNK)]) == [TORN]
    g.renamed(".a.txt.soak00", "a.txt", True, "mv: ok")
    assert kinds(g, []) == [LOST]  # renamed to a real name: it must arrive


def test_the_source_of_a_rename_into_a_blocked_file_may_stay() -> None:
    """mv b.txt a.txt (a copy without PATCH), then a.txt killed while open for writing: the
    copy is never sent, so b.txt's attachment is never deleted (seed 407). Only then."""
    g = group()
    g.certain("b.txt", V1, "close ok")
    g.renamed("b.txt", "a.txt", True, "mv b.txt a.txt: ok")
    assert kinds(g, [("a.txt", V1), ("b.txt", V1)]) == [RESURRECTED]
    blocked = frozenset({(REC, "a.txt")})
    assert kinds(g, [("b.txt", V1)], blocked) == []
    assert kinds(g, [("b.txt", V2)], blocked) == [MISPLACED]  # never a's version
