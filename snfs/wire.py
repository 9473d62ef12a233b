"""The download workers' HTTP/1.1 transport: httpx's request and response model over the
standard library's `http.client`, which reads a body straight from the socket.

httpx's synchronous client parses answers with h11: every piece of a body is received, then
copied into h11's buffer and copied out of it again, with a few Python calls per event. A
download worker (`snfs.transfer`) moves whole files, so those two copies and that Python were
a fifth of its CPU (measured: 256 MiB from the emulator, identity, hashed and written with
`pwritev`: 0.29 s of CPU with h11, 0.22 s here). `http.client` hands back the socket's bytes as
they came (`read1`: one `recv` into the result, chunked transfer coding undone), so each byte is
copied once, by the kernel.

Everything else stays httpx's: the client builds and authorizes the request, keeps the cookies,
undoes a gzip `Content-Encoding`, counts the bytes; a failure is raised as the httpx
exception the rest of snfs maps (`ConnectError`, `ReadTimeout`, `ReadError`,
`RemoteProtocolError`...), with the `ssl` error behind a certificate failure kept as its cause.
TLS is verified with the same `ssl.SSLContext` as the async client's. Used only where no proxy
is configured in the environment (httpx ignores environment proxies once given a transport);
with one, the workers keep httpx's own transport.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import httpx

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

RECV = 1 << 18  # at most this many bytes per receive (one `recv` into a fresh bytes object)
# The answer's read buffer (http.client: 8 KiB). A body piece that does not start in it is
# received straight into its own bytes object; what a header or chunk-size line brought along
# is copied out of it. 64 KiB: a body sent in small chunks (a real instance's chunk size is not
# documented) costs one `recv` per 64 KiB, not one per chunk, and a body in large chunks has at
# most 64 KiB per chunk copied once more.
BUFFER = 1 << 16


class _Response(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # nothing read from it yet; the socket stays open
        self.fp = cast(Any, sock.makefile("rb", buffering=BUFFER))

    def readinto1(self, buffer: WriteableBuffer) -> int:
        """`read1` into `buffer`: at most one receive (straight into it, when it is larger than
        the read buffer), chunked transfer coding undone; 0 at the body's end. Mirrors
        `read1` and `_read1_chunked` of Python 3.11's http.client, whose chunk bookkeeping
        (`_get_chunk_left`, `chunk_left`) it shares."""
        b = memoryview(buffer)
        if self.fp is None or self._method == "HEAD":  # type: ignore[attr-defined]
            return 0
        if self.chunked:
            left = self._get_chunk_left()  # type: ignore[attr-defined]
            if left is None:
                return 0
            n = self.fp.readinto1(b[:left])
            self.chunk_left = left - n
            if not n:
                raise http.client.IncompleteRead(b"")
            return n
        if self.length is not None:
            b = b[: self.length]
            if not b:
                self._close_conn()  # type: ignore[attr-defined]
                return 0
        n = self.fp.readinto1(b)
        if not n:
            self._close_conn()  # type: ignore[attr-defined]
        elif self.length is not None:
            self.length -= n
        return n


class _HTTPConnection(http.client.HTTPConnection):
    response_class = _Response


class _HTTPSConnection(http.client.HTTPSConnection):
    response_class = _Response


def proxied() -> bool:
    """Whether the environment names a proxy (then httpx's own transport must be used)."""
    return bool(urllib.request.getproxies())


class _Socket:
    """`resp.extensions["network_stream"]`: what `HttpCore`'s cancel needs to stop a worker
    blocked in `recv` (it shuts the socket down)."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


class _Body(httpx.SyncByteStream):
    """An answer's body as it arrives; closing it puts a connection whose answer was read to
    the end back into the pool, and closes any other."""

    def __init__(self, transport: WireTransport, key: tuple[str, str, int], conn: Any, resp: Any):
        self.transport, self.key, self.conn, self.resp = transport, key, conn, resp
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        with _mapped(httpx.ReadTimeout, httpx.ReadError):
            while True:
                chunk = self.resp.read1(RECV)
                if not chunk:
                    break
                yield chunk
        if self.resp.length:  # http.client ends a Content-Length body cut short quietly
            raise httpx.RemoteProtocolError(
                f"peer closed connection without sending complete message body "
                f"({self.resp.length} bytes missing)"
            )
        self.done = True

    def readinto1(self, b: memoryview) -> int:
        """The body's next bytes received into `b` (one receive at most); 0 at its end."""
        try:
            n = self.resp.readinto1(b)
        except (OSError, http.client.HTTPException):
            # Mapped only on a failure: this runs once per receive.
            with _mapped(httpx.ReadTimeout, httpx.ReadError):
                raise
        if not n:
            if self.resp.length:  # a Content-Length body cut short
                raise httpx.RemoteProtocolError(
                    f"peer closed connection without sending complete message body "
                    f"({self.resp.length} bytes missing)"
                )
            self.done = True
        return n

    def close(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        if self.done and self.resp.isclosed() and not self.resp.will_close:
            self.transport.put_back(self.key, conn)
        else:
            conn.close()


@contextlib.contextmanager
def _mapped(timeout: type[httpx.TransportError], other: type[httpx.TransportError]) -> Iterator:
    """http.client's and the socket's failures as the httpx exceptions snfs handles."""
    try:
        yield
    except TimeoutError as e:
        raise timeout(str(e) or "timed out") from e
    except http.client.HTTPException as e:  # IncompleteRead, BadStatusLine, ...
        raise httpx.RemoteProtocolError(f"{type(e).__name__}: {e}") from e
    except OSError as e:  # ssl.SSLError included: a failed handshake keeps it as the cause
        raise other(f"{type(e).__name__}: {e}") from e


def readinto(resp: httpx.Response) -> Callable[[memoryview], int] | None:
    """How a worker receives `resp`'s body straight into its own buffers: at most one
    receive per call, 0 at the end. None unless the answer came through `WireTransport`
    with an identity body (a gzip body needs httpx's decoder; the bytes then come through
    `iter_bytes`, each piece copied once more)."""
    body = resp.extensions.get(_READINTO)
    coding = resp.headers.get("content-encoding", "identity").strip().lower()
    return body if coding in ("", "identity") else None


_READINTO = "snfs.readinto1"  # the response extension that carries `_Body.readinto1`


class WireTransport(httpx.BaseTransport):
    """An httpx transport over `http.client`, with a pool of idle keep-alive connections."""

    def __init__(self, *, verify: ssl.SSLContext | str | bool, timeout: float, pool: int) -> None:
        self.context = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        )
        self.timeout, self.pool = timeout, pool
        self._idle: dict[tuple[str, str, int], list[Any]] = {}
        self._lock = threading.Lock()

    def _connection(self, key: tuple[str, str, int]) -> Any:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        scheme, host, port = key
        if scheme == "https":
            return _HTTPSConnection(host, port, timeout=self.timeout, context=self.context)
        return _HTTPConnection(host, port, timeout=self.timeout)

    def put_back(self, key: tuple[str, str, int], conn: Any) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.pool:
                idle.append(conn)
                return
        conn.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        key = (url.scheme, url.host, port)
        body = request.read()
        conn = self._connection(key)
        reused = conn.sock is not None
        try:
            resp, sock = self._send(conn, request, body)
        except httpx.TransportError:
            conn.close()
            if not reused or request.method not in ("GET", "HEAD"):
                raise
            # An idle connection the server closed meanwhile: once more, on a new one.
            self._drop_idle(key)
            conn = self._connection(key)
            try:
                resp, sock = self._send(conn, request, body)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.msg.items()]
        stream = _Body(self, key, conn, resp)
        return httpx.Response(
            resp.status,
            headers=headers,
            stream=stream,
            extensions={
                "http_version": b"HTTP/1.1" if resp.version == 11 else b"HTTP/1.0",
                "reason_phrase": resp.reason.encode("latin-1", "replace"),
                "network_stream": _Socket(sock),
                _READINTO: stream.readinto1,
            },
        )

    def _drop_idle(self, key: tuple[str, str, int]) -> None:
        with self._lock:
            idle = self._idle.pop(key, [])
        for old in idle:  # as old as the one that failed: not worth trying
            old.close()

    def _send(self, conn: Any, request: httpx.Request, body: bytes) -> tuple[Any, Any]:
        """Send `request` on `conn`; its answer's head, and the socket it comes on (the
        connection lets go of it when the answer ends with the connection)."""
        if conn.sock is None:
            with _mapped(httpx.ConnectTimeout, httpx.ConnectError):
                conn.connect()
        sock = conn.sock
        with _mapped(httpx.ReadTimeout, httpx.ReadError):
            target = request.url.raw_path.decode("ascii")
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            return conn.getresponse(), sock

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
