"""The keyset pager and its splitter, and the query helpers they use (no server, no mount).

The server here is a model (`AclServer`) of what a real instance does and the emulator, until
its switch for it exists, cannot: `sysparm_limit` applied *before* ACLs, so a page may come
back short or empty in the middle of a listing, and X-Total-Count counted before ACLs. The
same pager runs against the real emulator in tests/test_large_tables.py.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio

from snfs.backends.servicenow import query as q
from snfs.backends.servicenow.pager import Span, Splitter, hex_spans, keyset_pages
from snfs.errors import InvalidInput
from snfs.inodes import Inodes, Kind


class AclServer:
    """Rows ordered by (table_sys_id, sys_id); a hidden record's rows are dropped after the
    limit; terms `table_sys_id>=X`, `table_sys_id<X` understood; counts only when asked."""

    def __init__(self, rows: list[dict[str, str]], hidden: set[str], page_size: int) -> None:
        self.rows = sorted(rows, key=lambda r: (r["table_sys_id"], r["sys_id"]))
        self.hidden = hidden
        self.page_size = page_size
        self.requests = 0
        self.empty_pages = 0

    async def fetch(self, text: str, offset: int, count: bool) -> tuple[list[Any], int | None]:
        self.requests += 1
        await trio.lowlevel.checkpoint()
        low, high = "", None
        for t in text.split("^"):
            if t.startswith("table_sys_id>="):
                low = max(low, t[len("table_sys_id>=") :])
            elif t.startswith("table_sys_id<"):
                high = t[len("table_sys_id<") :]
        match = [
            r
            for r in self.rows
            if r["table_sys_id"] >= low and (high is None or r["table_sys_id"] < high)
        ]
        window = match[offset : offset + self.page_size]
        shown = [dict(r) for r in window if r["table_sys_id"] not in self.hidden]
        self.empty_pages += not shown
        return shown, (len(match) if count else None)


def _table(records: int, seed: int, heavy: int = 0) -> list[dict[str, str]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(records):
        rec = f"{rnd.getrandbits(128):032x}"
        n = heavy if i == 0 else rnd.randint(1, 5)
        rows += [{"table_sys_id": rec, "sys_id": f"{rnd.getrandbits(128):032x}"} for _ in range(n)]
    return rows


async def _collect(server: AclServer, span: Span | None = None) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    async for page in keyset_pages(
        server.fetch, "table_name=incident", "table_sys_id", page_size=server.page_size, span=span
    ):
        assert page, "a pager never yields an empty page"
        out += page
    return out


def _visible(server: AclServer) -> list[tuple[str, str]]:
    return [
        (r["table_sys_id"], r["sys_id"])
        for r in server.rows
        if r["table_sys_id"] not in server.hidden
    ]


@pytest.mark.parametrize("seed", range(6))
def test_every_visible_row_once_with_acl_short_and_empty_pages(seed: int) -> None:
    rows = _table(400, seed, heavy=130)  # one record longer than a page: a run of one key
    records = sorted({r["table_sys_id"] for r in rows})
    rnd = random.Random(seed)
    # Whole stretches hidden, so that some pages come back empty mid-listing.
    start = rnd.randrange(len(records) - 120)
    hidden = set(records[start : start + 100]) | set(rnd.sample(records, 40))
    server = AclServer(rows, hidden, page_size=50)
    got = trio.run(_collect, server)
    assert [(r["table_sys_id"], r["sys_id"]) for r in got] == _visible(server)
    assert server.empty_pages >= 1  # the case this test is about did happen


def test_a_short_page_without_any_count_ends_the_listing() -> None:
    rows = _table(30, 9)

    class NoCount(AclServer):
        async def fetch(self, text: str, offset: int, count: bool) -> tuple[list[Any], int | None]:
            shown, _ = await super().fetch(text, offset, count)
            return shown, None

    server = NoCount(rows, set(), page_size=20)
    got = trio.run(_collect, server)
    assert len(got) == len(rows)


def test_spans_cover_every_string_once() -> None:
    for parts in (1, 2, 3, 5, 16):
        spans = hex_spans(parts)
        assert spans[0].low is None and spans[-1].high is None
        assert all(a.high == b.low for a, b in zip(spans, spans[1:], strict=False))
    assert len(hex_spans(40)) == 16


def test_splitter_runs_disjoint_pagers_and_loses_nothing() -> None:
    rows = _table(600, 3, heavy=70)
    records = sorted({r["table_sys_id"] for r in rows})
    hidden = set(records[::7])
    server = AclServer(rows, hidden, page_size=40)

    async def main() -> list[dict[str, str]]:
        split = Splitter(server.fetch, "table_sys_id", parts=5, page_size=40)
        out: list[dict[str, str]] = []

        async def run(fetch: Any, span: Span) -> None:
            async for page in keyset_pages(
                fetch, "table_name=incident", "table_sys_id", page_size=40, span=span
            ):
                out.extend(page)

        async with trio.open_nursery() as n:
            n.start_soon(run, split.fetch, split.first)
            await split.decided.wait()
            assert split.extra, "a large listing is split"
            for span in split.extra:
                n.start_soon(run, server.fetch, span)
        return out

    got = trio.run(main)
    pairs = sorted((r["table_sys_id"], r["sys_id"]) for r in got)
    assert pairs == _visible(server)  # each visible row exactly once, across all pagers


def test_and_each_group_keeps_the_pager_terms_in_every_group() -> None:
    text = q.and_each_group(
        "active=true^NQpriority=1^ORDERBYnumber^short_descriptionLIKEa^^NQb",
        ["sys_id>=5"],
        ["ORDERBYsys_id"],
    )
    # `a^NQb` is `a OR b`: the key term must hold in both; the user's ORDERBY is dropped;
    # `^^NQ` inside a value is a literal, not a new group.
    assert text == (
        "active=true^sys_id>=5^NQpriority=1^short_descriptionLIKEa^^NQb^sys_id>=5^ORDERBYsys_id"
    )
    assert q.and_each_group("", ["x=1"], ["ORDERBYsys_id"]) == "x=1^ORDERBYsys_id"


def test_scope_names_are_percent_decoded_and_checked() -> None:
    assert q.decode_scope_name("active=true^priority=1") == "active=true^priority=1"
    assert q.decode_scope_name("short_descriptionLIKEa%2Fb%25") == "short_descriptionLIKEa/b%"
    for bad in ("", "^", "a=1%0Ab=2", "a=1%00", "%ff", "RLQUERYx"):
        with pytest.raises(InvalidInput):
            q.decode_scope_name(bad)
    ids = ["a" * 32, "b" * 32]
    assert q.attachments_of_records("incident", ids) == (
        f"table_name=incident^table_sys_idIN{ids[0]},{ids[1]}^ORDERBYtable_sys_id^ORDERBYsys_id"
    )
    with pytest.raises(InvalidInput):
        q.attachments_of_records("incident", ["x^ORa=b"])


def test_forgotten_record_nodes_are_freed_and_keep_their_number() -> None:
    inodes = Inodes()
    node = inodes.ensure(("record", "incident", "a" * 32), Kind.RECORD, table="incident")
    inodes.looked_up(node)
    before = len(inodes)
    inodes.forget(node.ino, 1)
    assert len(inodes) == before - 1 and inodes.get(node.ino) is None
    again = inodes.ensure(("record", "incident", "a" * 32), Kind.RECORD, table="incident")
    assert again.ino == node.ino
    table = inodes.ensure(("table", "incident"), Kind.TABLE, table="incident")
    inodes.looked_up(table)
    inodes.forget(table.ino, 1)
    assert inodes.get(table.ino) is table  # a table stays


def test_scope_and_numbers_options_reach_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from snfs import registry
    from snfs.arguments import add_arguments, from_args
    from snfs.errors import ConfigError

    monkeypatch.setenv("SNFS_PASSWORD", "pw")

    def build(*extra: str) -> Any:
        p = argparse.ArgumentParser()
        add_arguments(p)
        return registry.make_backend(from_args(p.parse_args(["dev1", "/m", "--user", "u", *extra])))

    r = build("--scope", "incident=active=true^NQpriority=1", "--scope", "problem=x=1", "--numbers")
    assert r.default.scopes == {"incident": "active=true^NQpriority=1", "problem": "x=1"}
    assert r.default_scope("incident") == "active=true^NQpriority=1"
    assert r.default_scope(".cccif") is None and not r.can_scope(".cccif")
    assert r.lists_numbers("incident") and not r.lists_numbers(".cccif")
    assert build().default.scopes == {} and not build().lists_numbers("incident")
    with pytest.raises(ConfigError):
        build("--scope", "incident")
    with pytest.raises(ConfigError):
        build("--scope", "Bad Table=active=true")


def test_scoped_listings_are_kept_for_the_recent_scopes_only() -> None:
    """Every `.query/<q>` visited starts a listing; over a day they must not pile up. This is
    the tree's own bookkeeping, not visible through a mount, so a minimal in-process backend
    stands in for the instance (it lists one record per scope)."""
    from datetime import UTC, datetime

    from snfs.backend import FULL, OptionalFeatures, RemoteFile
    from snfs.tree import SCOPES, Tree

    def one(scope: str) -> RemoteFile:
        now = datetime.now(UTC)
        rec = f"{abs(hash(scope)):032x}"[-32:]
        return RemoteFile(
            "f" + rec[1:], "t", rec, "a.txt", 1, "text/plain", now, now, "", "", "", ""
        )

    class Scoped(OptionalFeatures):  # the defaults, but scopes
        name = "fake"

        def capabilities(self, table: str) -> Any:
            return FULL

        def valid_table_name(self, table: str) -> bool:
            return True

        def can_scope(self, table: str) -> bool:
            return True

        async def list_scoped(self, table: str, scope: str, **kw: Any) -> Any:
            async def pages() -> Any:
                yield [one(scope)]

            yield pages()

    async def main() -> None:
        tree = Tree(Scoped())  # type: ignore[arg-type]
        for i in range(SCOPES + 4):
            listing = tree.listing("t", f"x={i}")
            await listing.complete()
            assert len(listing.records) == 1
        kept = {scope for _, scope in tree._listings}
        assert kept == {f"x={i}" for i in range(4, SCOPES + 4)}

    trio.run(main)
