"""The one wrapper every FUSE handler goes through, and the one place an exception becomes an
errno.

pyfuse3 lets only `FUSEError` out of a handler: any other exception ends `pyfuse3.main()` and
with it the mount. trio wraps what fails inside a nursery in an exception group (a listing that
runs its pages in parallel, a shared download), so the error a handler sees may be a group of
one `SnfsError` several levels deep. `errno_of` unwraps it and picks the errno; `handler` logs
what the user needs once (the client has already logged a failed request) and answers it.
Anything that is not an error snfs knows is a bug: logged once with its traceback, EIO.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from snfs.errors import SnfsError, leaves

log = logging.getLogger("snfs.fs")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# Test hook, documented in docs/SEMANTICS.md: SNFS_TEST_HANDLER_BUG=<handler name> makes that
# handler raise a plain RuntimeError, the kind of bug the wrapper must survive. A real bug cannot
# be provoked through the emulator on demand; this is the one place the tests need a fault. It is
# read once, when the handlers are defined: the wrapper below never looks at it.
TEST_HOOK = "SNFS_TEST_HANDLER_BUG"


def _injected_bug(name: str) -> Callable[..., Awaitable[Any]]:
    async def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"injected bug in {name} ({TEST_HOOK})")

    return bug


def _rank(exc: BaseException) -> int:
    """Which of several errors a handler answers with: the kernel's own answer first, then
    what the instance said, then local I/O, then a bug."""
    if isinstance(exc, pyfuse3.FUSEError):
        return 0
    if isinstance(exc, SnfsError):
        return 1
    if isinstance(exc, OSError):
        return 2
    return 3


def primary(exc: BaseException) -> BaseException:
    """The one error of `exc` (grouped or not) that a handler answers with."""
    return min(leaves(exc), key=_rank)


def errno_of(exc: BaseException) -> int:
    """The errno for any exception, grouped or not."""
    e = primary(exc)
    if isinstance(e, pyfuse3.FUSEError):
        return e.errno
    if isinstance(e, SnfsError):
        return e.errno
    if isinstance(e, OSError):
        return e.errno or errno.EIO
    return errno.EIO


def answer(name: str, exc: Exception) -> pyfuse3.FUSEError:
    """The FUSEError for `exc`, after one log line: nothing for a refusal or an instance's
    error (already logged where the request failed), one line for local disk trouble, the
    traceback once for a bug."""
    e = primary(exc)
    code = errno_of(e)
    label = errno.errorcode.get(code, str(code))
    if isinstance(e, SnfsError):
        log.debug("%s: %s -> %s", name, e.message, label)
    elif isinstance(e, OSError) and not isinstance(e, pyfuse3.FUSEError):
        # Local disk trouble (spool, cache): the errno is meaningful to the caller.
        log.error("%s: local I/O error: %s", name, e)
    bug = next((leaf for leaf in leaves(exc) if _rank(leaf) == 3), None)
    if bug is not None:  # a bug is never silent, even next to an error that has an errno
        log.error("unexpected error in %s; answering %s", name, label, exc_info=bug)
    return pyfuse3.FUSEError(code)


def handler(fn: F) -> F:
    name = fn.__name__
    call: Callable[..., Awaitable[Any]] = fn
    if os.environ.get(TEST_HOOK) == name:
        call = _injected_bug(name)

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await call(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:  # grouped or not: one errno, one log line
            raise answer(name, e) from None

    return wrapper  # type: ignore[return-value]


def fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)
