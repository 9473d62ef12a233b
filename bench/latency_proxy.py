"""`python -m bench.latency_proxy UPSTREAM --delay-ms N --port P`: a WAN in front of a server.

Loopback hides what a real instance costs: 50–500 ms per REST call. The benchmark puts this
reverse proxy in front of every server a system under test talks to (the emulator for snfs,
`rclone serve webdav` for rclone), so both pay the same delay per request, by the same code.

Each request waits `--delay-ms` before it is forwarded; with `--mbit`, answers share a link of
that bandwidth (else loopback speed). Bodies stream through in both directions untouched (gzip
stays gzip), and the `Host` header is kept, so `Link` URLs the upstream builds point back at
the proxy. Requests run concurrently: the delay is server time
per request, not a shared queue. Loopback only, for the benchmark.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

# Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own business on each side.
HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class Link:
    """The link's bandwidth, shared by every answer through the proxy (a token bucket of one
    second); None: as fast as loopback."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s
        self._free_at = 0.0  # when the link has sent everything handed to it so far

    async def send(self, n: int) -> None:
        if not self.rate:
            return
        now = trio.current_time()
        self._free_at = max(self._free_at, now) + n / self.rate
        await trio.sleep_until(self._free_at)


class LatencyProxy:
    def __init__(self, upstream: str, delay_s: float, bytes_per_s: float | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay_s
        self.link = Link(bytes_per_s)
        self.client = httpx.AsyncClient(
            timeout=None, limits=httpx.Limits(max_connections=64), follow_redirects=False
        )
        # The proxy keeps no cookies: a client's session cookie (JSESSIONID) must reach the
        # server as the client sent it, or every client would share the proxy's one session.
        self.client.cookies.jar.set_policy(_NoCookies())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        await trio.sleep(self.delay)
        url = self.upstream + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP]
        request = self.client.build_request(
            scope["method"], url, headers=headers, content=_body(receive)
        )
        response = await self.client.send(request, stream=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in HOP],
                }
            )
            async for chunk in response.aiter_raw():
                await self.link.send(len(chunk))
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body"):
            return


async def _run(upstream: str, delay_ms: float, port: int, mbps: float | None) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 300
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

        async def stopped() -> None:
            async for _ in signals:
                return

        app = LatencyProxy(upstream, delay_ms / 1000, mbps * 1e6 / 8 if mbps else None)
        await serve(app, config, shutdown_trigger=stopped)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.latency_proxy", description=__doc__)
    p.add_argument("upstream", help="http://127.0.0.1:PORT of the server behind the proxy")
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mbit", type=float, help="the link's bandwidth (answers), Mbit/s")
    a = p.parse_args(argv)
    trio.run(_run, a.upstream, a.delay_ms, a.port, a.mbit)


if __name__ == "__main__":
    main()
