"""Keyset paging over a ServiceNow list API, safe with pages that ACLs made short or empty.

Offset paging gets slower with depth (the instance counts and skips every earlier row) and runs
into the 60 s transaction quota on large tables. This pager resumes each page from a key
instead: rows are ordered by `<key>, sys_id`, and the next request asks for `<key> >= <last
key>`, skipping (by `sysparm_offset`) the rows of that last key it already has.

ACLs are applied after `sysparm_limit` on a real instance (Table API docs, `sysparm_limit`), so
a page may come back short or empty in the middle of a listing. The rules that keep every row,
once each:

- A page whose last row has a new key moves the key there; the offset becomes the number of
  rows of that key the page showed. Rows of one record share their ACL (attachment ACLs defer
  to the parent record), and in any case the rows skipped are a prefix of that key's rows that
  the page itself scanned, so nothing unseen is skipped.
- A page with no row past the current key (empty, or one long run of the same key) keeps the
  key and steps the offset by the page size: exactly the window the instance scanned.
- A short page does not end the listing. Pages after a full page ask `sysparm_no_count=true`;
  the request after a short page asks for the count (X-Total-Count, which counts before ACLs),
  and the listing ends when `offset + limit >= total`. If an instance sends no count at all, a
  short page ends it (the best that can be done then). While every page has come back full,
  no row was hidden, so the pages are contiguous: once they cover the first request's count
  the listing ends without another request. (Rows added during a listing, past that count,
  are seen by the next refresh.)
- Rows are yielded only when `(key, sys_id)` is past the last yielded one: a re-read row
  (a record that gained an attachment meanwhile) is never shown twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from snfs.backends.servicenow import query as q

Row = dict[str, Any]
# fetch(sysparm_query, offset, want_count) -> (rows, X-Total-Count or None)
Fetch = Callable[[str, int, bool], Awaitable[tuple[list[Row], int | None]]]


@dataclass
class Span:
    """A half-open range of key values `[low, high)` (None: unbounded), for parallel pagers.
    Mutable: a `Splitter` narrows the first pager's span once it knows the table is large."""

    low: str | None = None
    high: str | None = None

    def terms(self, key: str) -> list[str]:
        out = []
        if self.low is not None:
            out.append(q.term(key, ">=", self.low))
        if self.high is not None:
            out.append(q.term(key, "<", self.high))
        return out


def hex_spans(parts: int) -> list[Span]:
    """`parts` ranges covering every string, split on the first hex digit of a sys_id.

    The first range has no lower bound and the last no upper bound, so ids that are not hex
    (imported records may have any id) still fall into one of them."""
    parts = max(1, min(16, parts))
    cuts = ["0123456789abcdef"[(16 * i) // parts] for i in range(1, parts)]
    bounds: list[str | None] = [None, *cuts, None]
    return [Span(bounds[i], bounds[i + 1]) for i in range(parts)]


async def keyset_pages(
    fetch: Fetch,
    base: str,
    key: str,
    *,
    page_size: int = 1000,
    span: Span | None = None,
) -> AsyncIterator[list[Row]]:
    """Rows matching the encoded query `base` within `span`, ordered by `key, sys_id`, one
    list per page (never an empty list), each row once."""
    at: str | None = None  # the key the current query starts from
    offset = 0
    want_count = True
    last: tuple[str, str] | None = None
    span = span or Span()
    first_total: int | None = None  # X-Total-Count of the first request: the whole span
    scanned, all_full = 0, True
    while True:
        bounds = span.terms(key) + ([q.term(key, ">=", at)] if at is not None else [])
        text = q.and_each_group(base, bounds, [q.order_by(key), q.order_by("sys_id")])
        rows, total = await fetch(text, offset, want_count)
        if at is None and offset == 0:
            first_total = total
        fresh = [r for r in rows if last is None or _pos(r, key) > last]
        if fresh:
            last = _pos(fresh[-1], key)
            yield fresh
        if _finished(rows, total, offset, page_size, want_count):
            return
        # While every page came back full, no row was hidden and the windows were contiguous:
        # once they cover the first count, there is nothing more (saves the final request).
        all_full = all_full and len(rows) >= page_size
        scanned += page_size
        if all_full and first_total is not None and scanned >= first_total:
            return
        want_count = len(rows) < page_size
        at, offset = _advance(rows, key, at, offset, page_size)


def _pos(row: Row, key: str) -> tuple[str, str]:
    return str(row.get(key) or ""), str(row.get("sys_id") or "")


def _finished(
    rows: Sequence[Row], total: int | None, offset: int, page_size: int, asked: bool
) -> bool:
    if total is not None:
        return offset + page_size >= total
    if len(rows) >= page_size:
        return False
    # Short page without a count: if we asked and got none, this instance cannot tell us more.
    return asked


def _advance(
    rows: Sequence[Row], key: str, at: str | None, offset: int, page_size: int
) -> tuple[str | None, int]:
    if rows:
        tail = str(rows[-1].get(key) or "")
        if tail != at:
            return tail, sum(1 for r in rows if str(r.get(key) or "") == tail)
    return at, offset + page_size


# Split only listings of more than this many pages: below it, one pager's few requests cost
# less than one extra final request per pager.
SPLIT_ROWS = 10


class Splitter:
    """Runs one pager over the whole key range, and splits the rest of the range among
    `parts` pagers once the first page shows the listing is large.

    A small table costs one request, as before; a large one gets `parts` requests in flight.
    The split happens inside the first fetch, before that pager builds its second query, and
    only at cut points above the first page's last key, so the first pager keeps a range that
    contains everything its cursor has not passed and no row is seen by two pagers."""

    def __init__(
        self,
        fetch: Fetch,
        key: str,
        *,
        parts: int,
        page_size: int,
        on_total: Callable[[int | None], None] | None = None,
    ) -> None:
        self._fetch, self.key, self.parts, self.page_size = fetch, key, parts, page_size
        self.first = Span()
        self.extra: list[Span] = []
        self.decided = trio.Event()
        self.on_total = on_total  # called with the first page's count, before any other request

    async def fetch(self, text: str, offset: int, count: bool) -> tuple[list[Row], int | None]:
        try:
            rows, total = await self._fetch(text, offset, count)
        except BaseException:
            self.decided.set()
            raise
        if not self.decided.is_set():
            self._split(rows, total)
            if self.on_total is not None:
                self.on_total(total)
            self.decided.set()
        return rows, total

    def _split(self, rows: Sequence[Row], total: int | None) -> None:
        if self.parts <= 1 or not rows or total is None or total <= SPLIT_ROWS * self.page_size:
            return
        after = str(rows[-1].get(self.key) or "")
        cuts = [s.low for s in hex_spans(self.parts) if s.low is not None and s.low > after]
        if not cuts:
            return
        self.first.high = cuts[0]
        bounds: list[str | None] = [*cuts, None]
        self.extra = [Span(bounds[i], bounds[i + 1]) for i in range(len(cuts))]
