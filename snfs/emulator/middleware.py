"""Outermost ASGI layer: request counting (bytes in/out), fault injection, and the ways a real
instance is less kind than a test server: a hibernating instance's HTML page, rate limits,
one transaction at a time per session cookie, and server time per request.

It sits outside Starlette so an injected broken stream can end the ASGI call without a response
completing; Hypercorn then closes the connection mid-body, which is what a client sees when a
real transfer breaks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import trio

from snfs.emulator.faults import Fault
from snfs.emulator.sessions import SESSION_COOKIE, Sessions

if TYPE_CHECKING:
    from snfs.emulator.state import Emulator

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
CONTROL_PREFIX = "/__emulator__/"
RATE_LIMIT_BODY = {
    "error": {
        "message": "Rate limit exceeded",
        "detail": "Rate limit of 100 requests per hour for Table API exceeded",
    },
    "status": "failure",
}


HIBERNATING_PAGE = b"""<!DOCTYPE html>
<html><head><title>Instance Hibernating page</title></head>
<body><h1>Your instance is hibernating</h1>
<p>Sign in to the developer portal to wake up your instance.</p></body></html>
"""


class DropConnection(Exception):
    """Raised from `send` to abort a response after drop_after_bytes body bytes."""


def only_drops(exc: BaseException) -> bool:
    if isinstance(exc, DropConnection):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(only_drops(e) for e in exc.exceptions)
    return False


def fault_body(status: int) -> bytes:
    if status == 429:
        body = RATE_LIMIT_BODY
    else:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        body = {
            "error": {"message": phrase, "detail": "Injected by the emulator"},
            "status": "failure",
        }
    return json.dumps(body, separators=(",", ":")).encode()


class EmulatorMiddleware:
    def __init__(
        self, app: ASGIApp, emu: Emulator, fault_body: Callable[[int], bytes] = fault_body
    ) -> None:
        # `emu` is any object with `stats` and `faults`; `fault_body` renders an injected status
        # in the emulated system's error shape (the ServiceNow envelope by default).
        self.app, self.emu, self.fault_body = app, emu, fault_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        stats = self.emu.stats
        stats.count(scope["method"], scope["path"])

        async def counting_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                stats.bytes_in += len(message.get("body", b""))
            return message

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.body":
                stats.bytes_out += len(message.get("body", b""))
            await send(message)

        config = getattr(self.emu, "config", None)
        if getattr(config, "hibernating", False):
            await answer(counting_send, 200, HIBERNATING_PAGE, b"text/html;charset=UTF-8")
            return
        limited = self.rate_limited(scope)
        if limited is not None:
            await answer(counting_send, 429, self.fault_body(429), JSON_TYPE, limited)
            return
        sessions: Sessions | None = getattr(self.emu, "sessions", None)
        if sessions is None or not sessions.concurrency:
            await self.serve(scope, counting_receive, counting_send)
            return
        sid, is_new = sessions.of(scope)
        send_on = with_cookie(counting_send, sid) if is_new else counting_send
        async with sessions.lock(sid):
            await self.serve(scope, counting_receive, send_on)

    async def serve(self, scope: Any, receive: Any, send: Any) -> None:
        """One transaction: server time, then the answer (or an injected fault)."""
        latency = getattr(getattr(self.emu, "config", None), "latency", 0.0)
        if latency:
            await trio.sleep(latency)
        query = unquote_plus(scope.get("query_string", b"").decode("latin-1"))
        fault = self.emu.faults.take(scope["method"], scope["path"], query)
        if fault is None:
            try:
                await self.app(scope, receive, send)
            except BaseException as exc:
                if not only_drops(exc):  # a transfer cut by the quota (download.py)
                    raise
            return
        await self.apply(fault, scope, receive, send)

    def rate_limited(self, scope: Any) -> list[tuple[bytes, bytes]] | None:
        """The 429 headers when this user is over `--rate-limit` (inbound REST API rate
        limiting: a rule per user, Retry-After and X-RateLimit-*), else None."""
        limit = getattr(getattr(self.emu, "config", None), "rate_limit", None)
        if limit is None:
            return None
        user = dict(scope.get("headers") or []).get(b"authorization", b"")
        key = hashlib.sha256(user).hexdigest()
        count, per = limit
        now = time.monotonic()
        window = self.emu.rate_windows.get(key)
        if window is None or now >= window[0] + per:
            window = self.emu.rate_windows[key] = [now, 0]
        window[1] += 1
        if window[1] <= count:
            return None
        reset = window[0] + per
        return [
            (b"retry-after", str(max(1, int(reset - now + 0.999))).encode()),
            (b"x-ratelimit-limit", str(count).encode()),
            (b"x-ratelimit-reset", str(int(time.time() + reset - now)).encode()),
            (b"x-ratelimit-rule", b"snfs-emulator-rule"),
        ]

    async def apply(self, fault: Fault, scope: Any, receive: Any, send: Any) -> None:
        if fault.delay:
            await self.emu.faults.sleep(fault.delay)
        if fault.status is not None:
            await self.answer_status(fault, receive, send)
            return
        if fault.hold:
            await self.held(scope, receive, send)
            return
        if fault.drop_after_bytes is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, dropping_send(send, fault.drop_after_bytes))
        except BaseException as exc:
            if not only_drops(exc):
                raise
            # Returning without the final body message: Hypercorn closes the connection.

    async def held(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve the request now (the instance acts and answers as of now), then hold the
        answer until the test releases it."""
        messages: list[Any] = []

        async def keep(message: Any) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        await self.emu.faults.holds.wait()
        for message in messages:
            await send(message)

    async def answer_status(self, fault: Fault, receive: Any, send: Any) -> None:
        while True:  # read the request body so the client gets the answer, not a reset
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = self.fault_body(fault.status or 500)
        headers = [
            (b"content-type", b"application/json;charset=UTF-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if fault.retry_after is not None:
            headers.append((b"retry-after", f"{fault.retry_after:g}".encode()))
        await send({"type": "http.response.start", "status": fault.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


JSON_TYPE = b"application/json;charset=UTF-8"


async def answer(
    send: Any,
    status: int,
    body: bytes,
    ctype: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    start = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": start + (headers or [])}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def with_cookie(send: Any, sid: str) -> Callable[[Any], Awaitable[None]]:
    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            cookie = f"{SESSION_COOKIE}={sid}; Path=/; HttpOnly".encode()
            message = dict(message, headers=[*message.get("headers", []), (b"set-cookie", cookie)])
        await send(message)

    return wrapped


def dropping_send(send: Any, limit: int) -> Callable[[Any], Awaitable[None]]:
    sent = 0

    async def wrapped(message: Any) -> None:
        nonlocal sent
        if message["type"] != "http.response.body":
            await send(message)
            return
        body = message.get("body", b"")
        if sent + len(body) >= limit:
            part = body[: limit - sent]
            if part:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            raise DropConnection()
        sent += len(body)
        await send(message)

    return wrapped
