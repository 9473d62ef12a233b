"""Outermost ASGI layer: request counting (bytes in/out) and fault injection.

It sits outside Starlette so an injected broken stream can end the ASGI call without a response
completing; Hypercorn then closes the connection mid-body, which is what a client sees when a
real transfer breaks.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import trio

from snfs.emulator.faults import Fault
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

        fault = self.emu.faults.take(scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, counting_receive, counting_send)
            return
        await self.apply(fault, scope, counting_receive, counting_send)

    async def apply(self, fault: Fault, scope: Any, receive: Any, send: Any) -> None:
        if fault.delay:
            await trio.sleep(fault.delay)
        if fault.status is not None:
            await self.answer_status(fault, receive, send)
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
