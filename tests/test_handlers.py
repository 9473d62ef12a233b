"""The one errno chokepoint (snfs/handlers.py): every FUSE handler, driven with an error that
trio has wrapped in exception groups (as a nursery does), answers that error's errno with at
most one log line, and never lets anything but FUSEError out.

No kernel is involved: the handlers are called directly on an `Operations` whose every part
(tree, writes, cache, control, inode table, open handles) raises the grouped error on first
use. A real mount cannot be made to fail inside every handler on demand; a fake can.
"""

from __future__ import annotations

import errno
import inspect
import itertools
import logging
from typing import Any

import pyfuse3
import pytest
import trio

from snfs.errors import Forbidden, RateLimited, leaves, unwrap
from snfs.fs import Operations
from snfs.handlers import errno_of

# Handlers that refuse before touching anything: their own answer, whatever else fails.
REFUSE_FIRST = {
    "setxattr": errno.ENOTSUP,
    "removexattr": errno.ENOTSUP,
    "link": errno.EPERM,
    "symlink": errno.EPERM,
    "mknod": errno.EPERM,
}


def grouped(exc: BaseException) -> BaseExceptionGroup:
    """`exc` two nurseries deep, next to nothing else."""
    return ExceptionGroup("outer nursery", [ExceptionGroup("inner nursery", [exc])])


class Boom:
    """A part of the mount that fails on first use with `make()`."""

    def __init__(self, make: Any) -> None:
        self._make = make

    def __getattr__(self, name: str) -> Any:
        raise self._make()

    def __len__(self) -> int:
        raise self._make()


def failing_ops(make: Any) -> Operations:
    ops = Operations.__new__(Operations)
    part = Boom(make)
    for name in ("tree", "control", "inodes", "cache", "writes", "_dirs", "_files", "prefetch"):
        setattr(ops, name, part)
    ops._fh = itertools.count(1)
    return ops


def handlers() -> list[str]:
    """Every FUSE handler snfs implements (coroutines of Operations that pyfuse3 calls)."""
    return sorted(
        name
        for name, fn in vars(Operations).items()
        if hasattr(pyfuse3.Operations, name) and inspect.iscoroutinefunction(fn)
    )


def arg(name: str) -> Any:
    if name in ("name", "name_old", "name_new", "new_name", "target"):
        return b"some-name"
    if name == "value":
        return b"v"
    if name == "inode_list":
        return [(5, 1)]
    if name in ("ctx", "token"):
        return None
    if name == "attr":
        return pyfuse3.EntryAttributes()
    if name == "fields":
        return pyfuse3.SetattrFields()
    if name == "buf":
        return b"x"
    if name == "datasync":
        return False
    return 5  # inodes, handles, offsets, sizes, modes, flags


async def call(ops: Operations, name: str) -> Any:
    fn = getattr(ops, name)
    params = list(inspect.signature(fn).parameters)
    if name == "getxattr":
        return await fn(5, b"user.mime_type", None)
    return await fn(*(arg(p) for p in params))


def test_every_handler_goes_through_the_wrapper() -> None:
    found = handlers()
    assert {"lookup", "readdir", "read", "create", "unlink", "rename", "statfs"} <= set(found)
    for name in found:
        assert hasattr(getattr(Operations, name), "__wrapped__"), f"{name} is not wrapped"


@pytest.mark.parametrize(
    ("make", "code", "logged"),
    [
        (lambda: grouped(Forbidden("GET /attachment: 403 no")), errno.EACCES, 0),
        (lambda: grouped(RateLimited("GET /attachment: 429")), errno.EAGAIN, 0),
        (lambda: grouped(OSError(errno.ENOSPC, "spool full")), errno.ENOSPC, 1),
        (lambda: grouped(RuntimeError("a bug")), errno.EIO, 1),
        # A refusal next to a bug: the refusal is what the user gets; the bug is logged.
        (
            lambda: ExceptionGroup("n", [RuntimeError("bug"), Forbidden("GET /x: 403")]),
            errno.EACCES,
            1,
        ),
    ],
)
def test_each_handler_answers_a_grouped_error_with_its_errno(
    make: Any, code: int, logged: int, caplog: pytest.LogCaptureFixture
) -> None:
    ops = failing_ops(make)
    for name in handlers():
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="snfs"), pytest.raises(pyfuse3.FUSEError) as e:
            trio.run(call, ops, name)
        expected = REFUSE_FIRST.get(name, code)
        assert e.value.errno == expected, (name, e.value.errno)
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(loud) == (logged if name not in REFUSE_FIRST else 0), (name, loud)
        assert "Group" not in " ".join(r.getMessage() for r in loud), name


def test_unwrap_and_errno_of() -> None:
    inner = Forbidden("GET /x: 403")
    group = grouped(inner)
    assert leaves(group) == [inner] and unwrap(group) is inner
    assert errno_of(group) == errno.EACCES
    assert errno_of(grouped(pyfuse3.FUSEError(errno.ENOENT))) == errno.ENOENT
    assert errno_of(ValueError("x")) == errno.EIO
