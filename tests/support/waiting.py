"""`eventually()`: wait for a condition with a deadline, instead of fixed sleeps or hand-written
poll loops. Built on tenacity (already a dependency of the product's retry policy).

`check` returns a truthy value when the condition holds (that value is returned) or a falsy
one / raises AssertionError when it does not yet; at the deadline the last AssertionError is
raised again, or an AssertionError naming what was awaited.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from tenacity import (
    AsyncRetrying,
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")


def _policy(timeout: float, interval: float) -> dict[str, Any]:
    return {
        "stop": stop_after_delay(timeout),
        "wait": wait_fixed(interval),
        "retry": retry_if_exception_type(AssertionError) | retry_if_result(lambda v: not v),
    }


def _failed(e: RetryError, what: str, timeout: float) -> AssertionError:
    last = e.last_attempt
    if last.failed:
        exc = last.exception()
        assert exc is not None
        return AssertionError(f"{what}: not within {timeout:g} s: {exc}")
    return AssertionError(f"{what}: not within {timeout:g} s (last: {last.result()!r})")


def eventually(
    check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    what = what or getattr(check, "__name__", "condition")
    try:
        return Retrying(**_policy(timeout, interval))(check)
    except RetryError as e:
        raise _failed(e, what, timeout) from None


async def eventually_async(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - the condition's deadline, as in `eventually`
    interval: float = 0.05,
    what: str = "",
) -> T:
    """`eventually` for a coroutine function, in trio (sleeps with trio.sleep)."""
    what = what or getattr(check, "__name__", "condition")
    try:
        return await AsyncRetrying(sleep=trio.sleep, **_policy(timeout, interval))(check)
    except RetryError as e:
        raise _failed(e, what, timeout) from None


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Event, dict[str, Any]]:
    """Run a blocking call (a syscall on a mount) in a daemon thread: the Event is set when it
    returns, the dict holds its `value` or its `error`, for the test to check with a deadline."""
    done, box = threading.Event(), {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # reported by the test
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, box
