"""The download workers' receive buffers (snfs.transfer.Blocks, BlockPool), without sockets:
blocks aligned to file offsets, the held-back last byte, every byte handed to the check once
and in order, and a block used again only when nothing refers to it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snfs import transfer
from snfs.transfer import BLOCK, Block, BlockPool, Blocks

MiB = 2**20


def receive(blocks: Blocks, data: bytes, step: int) -> None:
    """Receive `data` into the blocks' free room, at most `step` bytes at a time."""
    view = memoryview(data)
    while view:
        room = blocks.room()
        n = min(len(room), step, len(view))
        room[:n] = view[:n]
        blocks.added(n)
        view = view[n:]


def joined(pieces: list[memoryview]) -> bytes:
    return b"".join(pieces)


def test_blocks_are_aligned_to_file_offsets() -> None:
    """A transfer resumed at 1.5 MiB: its first block ends at 2 MiB, the next ones are whole
    blocks, so a 1 MiB read at a 1 MiB boundary lies in one block."""
    blocks = Blocks(3 * MiB // 2)
    data = random.Random(1).randbytes(3 * MiB)
    receive(blocks, data, 300_000)
    blocks.release()
    pieces = blocks.take()
    assert joined(pieces) == data
    bases = sorted({(p.obj.base, len(p.obj)) for p in pieces if isinstance(p.obj, Block)})
    assert bases == [(3 * MiB // 2, MiB // 2), (2 * MiB, MiB), (3 * MiB, MiB), (4 * MiB, MiB)]


def test_the_last_byte_received_waits_for_the_release_when_the_size_is_unknown() -> None:
    blocks = Blocks(0)
    receive(blocks, b"abcdef", 4)
    assert blocks.ready == 5
    assert joined(blocks.take()) == b"abcde"
    receive(blocks, b"gh", 4)
    assert joined(blocks.take()) == b"fg"  # the byte held before goes with the next ones
    blocks.release()
    assert joined(blocks.take()) == b"h"
    assert blocks.ready == 0


def test_with_the_size_known_only_the_files_last_byte_is_held() -> None:
    """A whole block is handed over as soon as it is full (its readers need not wait for the
    next receive); the file's last byte, and anything a longer (wrong) body sends after it,
    only after the release."""
    total = BLOCK + 10
    blocks = Blocks(0, total)
    data = random.Random(2).randbytes(total + 5)
    receive(blocks, data[:BLOCK], 100_000)
    first = blocks.take()
    assert joined(first) == data[:BLOCK] and len(first) == 1  # one view: the whole block
    receive(blocks, data[BLOCK:], 100_000)  # 15 more: 5 past the file's end
    assert joined(blocks.take()) == data[BLOCK : total - 1]
    assert blocks.take() == []
    blocks.release()
    assert joined(blocks.take()) == data[total - 1 :]


def test_fresh_hands_every_byte_once_and_in_order() -> None:
    """What the check hashes (`fresh`) is exactly the body, whether it is asked for before or
    after the bytes are taken for the sink."""
    blocks = Blocks(123, None)
    data = random.Random(3).randbytes(3 * MiB + 17)
    seen, taken = bytearray(), bytearray()
    rng = random.Random(4)
    view = memoryview(data)
    while view:
        n = min(len(view), rng.randrange(1, 700_000))
        if rng.random() < 0.5:
            blocks.add(bytes(view[:n]))
        else:
            receive(blocks, bytes(view[:n]), n)
        view = view[n:]
        if rng.random() < 0.5:
            taken += joined(blocks.take())
        if rng.random() < 0.5:
            seen += joined(blocks.fresh())
    seen += joined(blocks.fresh())
    blocks.release()
    taken += joined(blocks.take())
    assert bytes(seen) == data and bytes(taken) == data


def test_a_block_is_used_again_only_when_nothing_refers_to_it() -> None:
    """A view of a block (a reader's answer, a piece the sink keeps) keeps it from the pool;
    once it is gone the pool hands the same block out again."""
    pool = BlockPool(keep=2)
    first = pool.take(BLOCK)
    view = memoryview(first)[:10]
    first_id = id(first)
    del first
    second = pool.take(BLOCK)
    assert id(second) != first_id  # the view still holds the first one
    del view
    third = pool.take(BLOCK)
    assert id(third) == first_id
    # Past `keep`, blocks are new each time and the pool does not keep them.
    extra = pool.take(BLOCK)
    assert all(id(extra) != id(b) for b in (second, third))
    pool.drain()
    assert id(pool.take(BLOCK)) not in (id(second), id(third))


def test_a_part_block_is_never_from_the_pool() -> None:
    pool = BlockPool(keep=4)
    part = pool.take(1000)
    assert len(part) == 1000
    del part
    assert len(pool.take(BLOCK)) == BLOCK


@pytest.mark.parametrize("resize", [True, False])
def test_a_new_block_has_its_size_with_or_without_the_resize(
    resize: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without CPython's in-place resize (another interpreter), a block is zeroed instead."""
    if not resize:
        monkeypatch.setattr(transfer, "_resize", None)
    block = transfer._allocate(4096)
    assert isinstance(block, Block) and len(block) == 4096


_SIZES = st.one_of(st.integers(1, 5000), st.integers(BLOCK - 10, BLOCK + 10))
_OPS = st.lists(
    st.tuples(st.sampled_from(["receive", "add", "take", "fresh"]), _SIZES), max_size=12
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    start=st.integers(0, 3 * BLOCK), size_known=st.booleans(), longer=st.integers(0, 2), ops=_OPS
)
def test_blocks_against_a_model(start: int, size_known: bool, longer: int, ops: list) -> None:
    """Any order of receives, stream pieces, takes and hand-overs to the check: what is taken
    is the body in order, never past the held byte before the release; what the check sees
    is the body in order, each byte once; every view lies in one block aligned to the file.
    `longer`: a body that many bytes longer than the file's size (a wrong body)."""
    body = random.Random(start).randbytes(sum(n for op, n in ops if op in ("receive", "add")))
    total = start + len(body) - longer if size_known else None
    blocks = Blocks(start, total)
    taken, seen, pos = bytearray(), bytearray(), 0

    def check_views(views: list[memoryview]) -> None:
        for v in views:
            block = v.obj
            assert isinstance(block, Block)
            assert block.base + len(block) == (block.base // BLOCK + 1) * BLOCK

    for op, n in ops:
        if op in ("receive", "add"):
            chunk = body[pos : pos + n]
            (receive if op == "receive" else lambda b, d, s: b.add(d))(blocks, chunk, n)
            pos += n
        elif op == "take":
            views = blocks.take()
            check_views(views)
            before = start + len(taken)
            taken += joined(views)
            # Up to the held byte: the last received, or the file's last where its size is known.
            held = start + pos - 1 if total is None else min(start + pos, total - 1)
            assert start + len(taken) == max(before, held)
        else:
            views = blocks.fresh()
            check_views(views)
            seen += joined(views)
            assert bytes(seen) == body[:pos]
        assert bytes(taken) == body[: len(taken)]
    seen += joined(blocks.fresh())
    blocks.release()
    taken += joined(blocks.take())
    assert bytes(taken) == body and bytes(seen) == body
