"""The one wrapper every FUSE handler goes through.

pyfuse3 lets only `FUSEError` out of a handler: any other exception ends `pyfuse3.main()` and
with it the mount. So every handler maps the client's errors to their errno, logs anything
unexpected once with its traceback, and answers EIO for it.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from snfs.errors import SnfsError

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
        except SnfsError as e:
            # The client has already logged the failed request once; don't log it again.
            log.debug("%s: %s -> %s", name, e.message, errno.errorcode.get(e.errno, e.errno))
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            # Local disk trouble (spool, cache): the errno is meaningful to the caller.
            log.error("%s: local I/O error: %s", name, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s; answering EIO", name)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)
