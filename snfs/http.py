"""The HTTP core: request policy shared by every backend (snfs.backends.*).

What is independent of the system talked to lives here, once:

- one `httpx.AsyncClient` per backend: pool sized to `max_in_flight`, HTTP/1.1, TLS
  verification on, no redirects (credentials never travel to another host);
- a pool of `max_in_flight` sessions bounds the requests in flight: each request runs in a
  session of its own, whose cookie jar (`JSESSIONID`) is reused by the next request that takes
  it. A real instance runs one transaction at a time per session, so one shared jar would
  queue every parallel request; no jar at all would open a server session per request.
  Downloads and uploads may hold all but an eighth of the pool (at least one session is kept),
  so listings and lookups never wait behind bulk transfers;
- a 2xx answer is checked before it is used: an HTML page (hibernating instance, login page)
  is `NotAnApi`, a JSON body with `error` or `"status": "failure"` is `FailedInBody`;
- a tenacity loop (exponential backoff with full jitter, `Retry-After` honoured, bounded in
  attempts and total time) retries connection errors, timeouts, 429 and 503 always, 502/504
  only for idempotent requests. A non-idempotent request (POST) is retried only when it
  provably did not reach the server (connect errors, 429, 503); otherwise the error is raised
  with `in_doubt = True` for the caller to resolve;
- responses and transport errors are mapped to `snfs.errors` (`http_error`,
  `transport_error`);
- each failure that reaches the caller is logged exactly once (on the core's logger:
  `snfs.http` unless the owner gives its own), from method, path and the server's own message
  only: never a credential;
- downloads resume after a broken connection (`Resume`, `Skip`); `HttpCore.stream` asks again
  and skips what was already delivered (these APIs show no Range support). `stream_into` is
  the same loop with each attempt's body received, checked and put into a sink by a worker
  thread (httpx's synchronous client; `snfs.transfer`).

System-specific behaviour stays with its owner and plugs in through `HttpCore`'s hooks
(`error_mapper`, `on_response`, `resend_on_401`, a `SendState` per call).
"""

from __future__ import annotations

import contextlib
import email.utils
import http.cookiejar
import json as _json
import logging
import socket
import ssl
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Sequence,
)
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import httpcore
import httpx
import trio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from snfs import __version__, progress, wire
from snfs.errors import (
    AuthError,
    CertificateError,
    ConnectionFailed,
    FailedInBody,
    Forbidden,
    InvalidInput,
    NotAnApi,
    NotFound,
    QuotaCut,
    RateLimited,
    ServerError,
    SnfsError,
    Timeout,
    TooLarge,
    Unsupported,
)
from snfs.secrets import Secret
from snfs.transfer import Blocks, Sink, Stop, in_worker, put

log = logging.getLogger("snfs.http")

__all__ = [
    "CHUNK",
    "DOWNLOAD_BREAKS",
    "NOT_SENT",
    "BackoffState",
    "ErrorMapper",
    "HttpCore",
    "HttpSettings",
    "HttpStats",
    "HeaderToken",
    "Answer",
    "Fetch",
    "SentBody",
    "upload_once",
    "Resume",
    "SendState",
    "Session",
    "SessionPool",
    "Skip",
    "WorkerAnswer",
    "body_error",
    "error_message",
    "http_error",
    "retry_after",
    "retryable",
    "transport_error",
]

CHUNK = 256 * 1024  # read/download/upload chunk size
RECV = wire.RECV  # socket read of a download worker: 256 KiB (httpcore: 64 KiB); see below

# A download's worker reads the socket in pieces of RECV bytes (`snfs.wire`): fewer wake-ups
# and less Python per byte than 64 KiB, while each piece stays in the CPU's cache until it is
# hashed and written (measured side by side: 256 KiB read 1.47× faster than 1 MiB, with less
# CPU). With a proxy the workers use httpx's own transport: its synchronous client (only the
# workers use it) reads as much.
httpcore._sync.http11.HTTP11Connection.READ_NUM_BYTES = RECV

# Transport errors after which the request provably never reached the server.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
DOWNLOAD_BREAKS = (httpx.TransportError, httpx.DecodingError)

ErrorMapper = Callable[[httpx.Response, str, str, str], SnfsError]


# ----------------------------------------------------------------------------------------------
# Errors


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def error_message(resp: httpx.Response) -> tuple[str, str]:
    """(message, detail) from an error body: `{"error": {"message", "detail"}}`,
    `{"error": "...", "error_description"}`, `{"message"}` or short plain text; tolerant of
    anything."""
    try:
        body = _json.loads(resp.content) if resp.content else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return _text(err.get("message")).strip(), _text(err.get("detail")).strip()
        if isinstance(err, str):
            return err, _text(body.get("error_description"))
        if "message" in body:
            return _text(body.get("message")), ""
    ctype = resp.headers.get("content-type", "")
    if resp.content and "html" not in ctype and "xml" not in ctype:
        text = resp.content[:300].decode("utf-8", "replace")
        text = " ".join(text.split())
        if text:
            return text, ""
    return resp.reason_phrase or "", ""


def retry_after(resp: httpx.Response) -> float | None:
    """`Retry-After` in seconds (delta or HTTP date), or None."""
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


_BY_STATUS: dict[int, type[SnfsError]] = {
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    405: Unsupported,
    413: TooLarge,
    429: RateLimited,
}


def error_class(status: int) -> type[SnfsError]:
    """The error for a status, by status only (a system's own mapper may refine it)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return InvalidInput if status == 400 else ServerError


def http_error(
    resp: httpx.Response,
    kind: str,
    method: str,
    path: str,
    cls: type[SnfsError] | None = None,
) -> SnfsError:
    """The `SnfsError` for a non-2xx answer (`cls`, else by status); `retry_after` set from
    its header."""
    status = resp.status_code
    message, detail = error_message(resp)
    cls = cls or error_class(status)
    shown = message or resp.reason_phrase
    if detail and detail != message:
        shown = f"{shown} ({detail})"
    err = cls(
        f"{method} {path}: {status} {shown}".rstrip(),
        status=status,
        instance_message=message or None,
        method=method,
        path=path,
    )
    err.retry_after = retry_after(resp)
    return err


_HTML_START = (b"<!doctype html", b"<html")


def is_html(resp: httpx.Response, head: bytes = b"") -> bool:
    """Whether an answer is a web page: by its type, or by how its body starts."""
    if "html" in resp.headers.get("content-type", "").lower():
        return True
    return head[:200].lstrip().lower().startswith(_HTML_START)


HTML_PAGE = (
    "the instance answered with an HTML page: hibernating developer instance, or not the REST API?"
)


def body_error(resp: httpx.Response, method: str, path: str) -> SnfsError | None:
    """What is wrong with a 2xx answer to an API request, or None: an HTML page instead of
    JSON, or a JSON body that says it failed (a transaction cancelled by its quota answers
    200 with a partial `result` plus `error` and `"status": "failure"`)."""
    content = resp.content
    if not content:
        return None
    if is_html(resp, content):
        return NotAnApi(
            f"{method} {path}: {resp.status_code}: {HTML_PAGE}",
            status=resp.status_code,
            method=method,
            path=path,
        )
    if b'"error"' not in content and b'"failure"' not in content:
        return None  # the common case, without parsing the body twice
    try:
        body = _json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or ("error" not in body and body.get("status") != "failure"):
        return None
    message, detail = error_message(resp)
    shown = message or "failure"
    if detail and detail != message:
        shown = f"{shown} ({detail})"
    return FailedInBody(
        f"{method} {path}: {resp.status_code} with an error in the body: {shown}",
        status=resp.status_code,
        instance_message=message or "failure",
        method=method,
        path=path,
    )


CA_HINT = "give the CA that signed it with --ca-bundle FILE"


def certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a transport error, if that is what it is
    (httpx wraps the ssl module's error, under trio in a BrokenResourceError)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def transport_error(exc: Exception, method: str, path: str) -> SnfsError:
    bad_cert = certificate_failure(exc)
    if bad_cert is not None:
        why = bad_cert.verify_message or bad_cert.reason or str(bad_cert)
        return CertificateError(
            f"{method} {path}: TLS certificate not trusted "
            f"(CERTIFICATE_VERIFY_FAILED: {why}): {CA_HINT}",
            method=method,
            path=path,
        )
    cls = Timeout if isinstance(exc, httpx.TimeoutException) else ConnectionFailed
    reason = str(exc).strip()
    what = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return cls(f"{method} {path}: {what}", method=method, path=path)


def retryable(exc: BaseException) -> bool:
    """Whether asking again may help. A certificate that is not trusted never becomes
    trusted by asking again, whatever the caller marked."""
    return isinstance(exc, SnfsError) and exc.retryable and not isinstance(exc, CertificateError)


# ----------------------------------------------------------------------------------------------
# Settings, counters, auth


@dataclass
class HttpStats:
    """Counters for `snfs status` (`snfs.client.ClientStats` is one with ServiceNow's kinds)."""

    kinds: tuple[str, ...] = ()
    requests: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    retries: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        for k in self.kinds:
            self.requests.setdefault(k, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "retries": self.retries,
            "errors": self.errors,
        }


@dataclass
class HttpSettings:
    base_url: str  # scheme://host[:port][/prefix], no trailing slash
    timeout: float = 30.0
    max_in_flight: int = 8
    verify: bool | str = True  # str = CA bundle path
    retry_attempts: int = 6
    retry_total_seconds: float = 60.0
    retry_base_delay: float = 0.5
    retry_max_delay: float = 15.0
    user_agent: str = f"snfs/{__version__}"


class HeaderToken(httpx.Auth):
    """A static token sent in a header (Huawei's `X-Auth-Token`); never shown by repr/str."""

    def __init__(self, header: str, token: str | Secret) -> None:
        self.header = header
        self._token = Secret(token)

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers[self.header] = self._token.reveal()
        yield request

    def __repr__(self) -> str:
        return f"HeaderToken({self.header!r}, ***)"


@dataclass
class SendState:
    """What one `HttpCore.send` call learnt across its attempts."""

    attempts: int = 0
    lost_response: bool = False  # an earlier attempt may have reached the server
    auth_retried: bool = False


class Session:
    """One server session: the cookie jar one request at a time uses."""

    def __init__(self) -> None:
        self.cookies = httpx.Cookies()


class SessionPool:
    """`size` sessions, each used by one request at a time; the one used last is taken first,
    so an idle mount keeps one server session and a busy one at most `size`.

    Bulk transfers (downloads, uploads) may hold at most `size - reserve` of them: a slow or
    large transfer never takes the sessions that listings and lookups need, so `ls` answers
    while every bulk slot is busy. `reserve` is an eighth of the pool, at least 1: listings and
    lookups are sequential per process, and every session kept back is one upload or download
    fewer in parallel (measured: cp -r with write-back over a WAN)."""

    def __init__(self, size: int, reserve: int | None = None) -> None:
        self.size = max(1, size)
        if reserve is None:
            reserve = max(1, self.size // 8)
        self.reserve = min(reserve, self.size - 1)  # a pool of 1 has nothing to keep back
        self._free = [Session() for _ in range(self.size)]
        self._sem = trio.Semaphore(self.size)
        self._bulk = trio.Semaphore(self.size - self.reserve)

    @asynccontextmanager
    async def take(self, *, bulk: bool = False) -> AsyncIterator[Session]:
        async with AsyncExitStack() as stack:
            if bulk:
                await stack.enter_async_context(self._bulk)
            await stack.enter_async_context(self._sem)
            session = self._free.pop()
            try:
                yield session
            finally:
                self._free.append(session)

    @property
    def in_use(self) -> int:
        return self.size - self._sem.value


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """The shared client keeps no cookies: each session has its own jar."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class BackoffState:
    """The bit of tenacity's RetryCallState its wait functions read."""

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


# ----------------------------------------------------------------------------------------------
# The core


class HttpCore:
    def __init__(
        self,
        settings: HttpSettings,
        auth: httpx.Auth | None,
        *,
        stats: HttpStats,
        error_mapper: ErrorMapper = http_error,
        default_headers: dict[str, str] | None = None,
        logger: logging.Logger = log,
        on_response: Callable[[httpx.Response], None] | None = None,
        resend_on_401: bool = False,
    ) -> None:
        """`on_response` sees every answer `send` gets (e.g. to learn the server's clock);
        `resend_on_401`: the auth refreshes its token on a 401 but cannot resend a streamed
        body itself, so such a request is sent once more at once."""
        self.settings = settings
        self.stats = stats
        self.map_error = error_mapper
        self.log = logger
        self.on_response = on_response
        self.resend_on_401 = resend_on_401
        self.base = settings.base_url.rstrip("/")
        self.sessions = SessionPool(settings.max_in_flight)
        # A download that feeds an upload (copy for rename) runs while that upload holds a
        # session: it takes this spare one, so it never waits on its own upload's session.
        self.spare = SessionPool(1)
        verify: Any = settings.verify
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        pool = max(1, settings.max_in_flight) + 2  # + room for token requests / copy streams
        headers = {"User-Agent": settings.user_agent}
        headers.update(default_headers or {})
        common: dict[str, Any] = dict(
            verify=verify,
            http2=False,
            timeout=httpx.Timeout(settings.timeout),
            limits=httpx.Limits(
                max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=30.0
            ),
            headers=headers,
            follow_redirects=False,
        )
        self.http = httpx.AsyncClient(auth=auth, **common)
        # The client of the download workers (`stream_into`): one thread per transfer
        # receives with it. No auth of its own: the event loop authorizes each request. Its
        # transport reads bodies straight from the socket (`snfs.wire`), unless a proxy is
        # configured (httpx honours the environment's proxies only with its own transport).
        if not wire.proxied():
            common["transport"] = wire.WireTransport(
                verify=verify, timeout=settings.timeout, pool=pool
            )
        self.worker_http = httpx.Client(**common)
        for client in (self.http, self.worker_http):
            client.cookies.jar.set_policy(_NoCookies())
        self.auth = auth

    def __repr__(self) -> str:
        return f"HttpCore({self.base!r})"

    async def aclose(self) -> None:
        await self.http.aclose()
        self.worker_http.close()

    def session(self, spare: bool = False, *, bulk: bool = False) -> Any:
        """`async with core.session() as s`: a session of the pool for one request; `bulk`
        for a transfer of content (limited so that metadata requests always find one)."""
        return (self.spare if spare else self.sessions).take(bulk=bulk)

    async def send_in(
        self, session: Session, request: httpx.Request, *, stream: bool = False
    ) -> httpx.Response:
        """Send `request` in `session`: its cookies go out, the answer's cookies come back."""
        session.cookies.set_cookie_header(request)
        resp = await self.http.send(request, stream=stream)
        session.cookies.extract_cookies(resp)
        return resp

    def count(self, kind: str) -> None:
        self.stats.requests[kind] = self.stats.requests.get(kind, 0) + 1

    # -- retry policy ------------------------------------------------------------------------

    def backoff(self) -> Any:
        s = self.settings
        return wait_random_exponential(multiplier=s.retry_base_delay, max=s.retry_max_delay)

    def retrying(self, attempts: int | None = None) -> AsyncRetrying:
        s = self.settings
        backoff = self.backoff()

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            if not isinstance(exc, SnfsError):
                return float(backoff(rs))
            return max(exc.retry_after or 0.0, 0.0 if exc.no_wait else backoff(rs))

        def before_sleep(rs: RetryCallState) -> None:
            self.stats.retries += 1
            exc = rs.outcome.exception() if rs.outcome else None
            self.log.debug("retrying in %.2f s after: %s", rs.upcoming_sleep, exc)

        return AsyncRetrying(
            sleep=trio.sleep,
            stop=stop_after_attempt(attempts or s.retry_attempts)
            | stop_before_delay(s.retry_total_seconds),
            wait=wait,
            retry=retry_if_exception(retryable),
            before_sleep=before_sleep,
            reraise=True,
        )

    def failed(self, err: SnfsError) -> SnfsError:
        """Count and log a failure that reaches the caller: exactly one line, no secrets."""
        self.stats.errors += 1
        if err.status and err.instance_message:
            what = f"{err.status} {err.instance_message}"
        else:  # the message is "METHOD PATH: what" (a transport error, an HTML page)
            prefix = f"{err.method} {err.path}: "
            what = err.message[len(prefix) :] if err.message.startswith(prefix) else err.message
        self.log.warning("%s %s failed: %s", err.method, err.path, what)
        return err

    async def read_error(self, resp: httpx.Response, kind: str, path: str) -> SnfsError:
        """The error of a streamed GET that was refused (its body read); 429/5xx retryable."""
        await resp.aread()
        return self.refused_download(resp, kind, path)

    def refused_download(self, resp: httpx.Response, kind: str, path: str) -> SnfsError:
        """`read_error` of an answer whose body is read (in a worker: `resp.read()`)."""
        err = self.map_error(resp, kind, "GET", path)
        err.retryable = resp.status_code in (429, 502, 503, 504)
        return err

    # -- buffered requests -------------------------------------------------------------------

    async def send(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        body: Callable[[], AsyncIterable[bytes]] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
        allow: tuple[int, ...] = (),
        attempts: int | None = None,
        log_failure: bool = True,
        on_attempt: Callable[[], None] | None = None,
        state: SendState | None = None,
    ) -> httpx.Response:
        """One logical request with retries; the response with its body read.

        Raises the mapped `SnfsError` unless the status is 2xx or in `allow`. `path` is
        relative to the base URL and is what errors and logs show. `state` collects what the
        attempts learnt (how many, whether a response may have been lost).
        """
        state = state if state is not None else SendState()

        async def attempt() -> httpx.Response:
            state.attempts += 1
            if on_attempt is not None:
                on_attempt()
            resp = await self._attempt(
                kind, method, path, params, json, body, headers, idempotent, state
            )
            if resp.is_success:
                bad = body_error(resp, method, path)
                if bad is None:
                    return resp
                # A body that failed (e.g. cut by the quota) may do better next time; a page
                # instead of the API will not.
                bad.retryable = idempotent and isinstance(bad, FailedInBody)
                raise bad
            if resp.status_code in allow:
                return resp
            raise self._refused(resp, kind, method, path, body is not None, idempotent, state)

        try:
            return await self.retrying(attempts)(attempt)
        except SnfsError as err:
            if err.in_doubt or not log_failure:
                raise err
            raise self.failed(err) from None

    async def _attempt(
        self,
        kind: str,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        json: Any,
        body: Callable[[], AsyncIterable[bytes]] | None,
        headers: dict[str, str] | None,
        idempotent: bool,
        state: SendState,
    ) -> httpx.Response:
        """One attempt: the response (any status), or the mapped transport error."""
        hdrs = {"Accept": "application/json"}
        hdrs.update(headers or {})
        # An upload's body is counted into its transfer, for `snfs status`.
        content: Any = progress.counted(body()) if body is not None else None
        if json is not None:
            content = _json.dumps(json).encode()
            hdrs["Content-Type"] = "application/json"
            self.stats.bytes_out += len(content)
        request = self.http.build_request(
            method, self.base + path, params=params, content=content, headers=hdrs
        )
        self.count(kind)
        started = time.monotonic()
        async with self.session(bulk=body is not None) as session:  # a body: an upload
            try:
                resp = await self.send_in(session, request)
            except httpx.TransportError as e:
                err = transport_error(e, method, path)
                not_sent = isinstance(e, NOT_SENT)
                if not not_sent:
                    state.lost_response = True
                err.retryable = idempotent or not_sent
                err.in_doubt = not idempotent and not not_sent
                self.log.debug("%s %s: %s", method, path, err.message)
                raise err from None
            except httpx.HTTPError as e:  # e.g. a body that cannot be sent again
                raise ServerError(
                    f"{method} {path}: {type(e).__name__}: {e}", method=method, path=path
                ) from None
        self.stats.bytes_in += resp.num_bytes_downloaded
        if self.on_response is not None:
            self.on_response(resp)
        self.log.debug(
            "%s %s -> %d (%.0f ms)",
            method,
            path,
            resp.status_code,
            (time.monotonic() - started) * 1000,
        )
        return resp

    def _refused(
        self,
        resp: httpx.Response,
        kind: str,
        method: str,
        path: str,
        streamed: bool,
        idempotent: bool,
        state: SendState,
    ) -> SnfsError:
        """The error for a refused answer, marked retryable / in doubt by the policy."""
        err = self.map_error(resp, kind, method, path)
        status = resp.status_code
        if status in (429, 503):
            err.retryable = True
        elif status in (502, 504):
            err.retryable = idempotent
            err.in_doubt = not idempotent
            state.lost_response = True
        elif status == 401 and streamed and self.resend_on_401 and not state.auth_retried:
            # The auth has refreshed its token but could not resend a streamed body itself.
            state.auth_retried = True
            err.retryable = True
            err.no_wait = True
        return err

    # -- streamed responses ------------------------------------------------------------------

    @asynccontextmanager
    async def open(
        self,
        kind: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        allow: tuple[int, ...] = (),
    ) -> AsyncIterator[httpx.Response]:
        """A GET whose body is not read: for its headers, or to stream it. Retries failures
        to connect and 429/5xx before the body; a status outside 2xx/`allow` raises."""
        url = self.base + path

        async def attempt() -> httpx.Response:
            self.count(kind)
            request = self.http.build_request("GET", url, params=params, headers={"Accept": "*/*"})
            try:
                resp = await self.send_in(session, request, stream=True)
            except httpx.TransportError as e:
                err = transport_error(e, "GET", path)
                err.retryable = True
                raise err from None
            if resp.is_success or resp.status_code in allow:
                return resp
            err = await self.read_error(resp, kind, path)
            self.stats.bytes_in += resp.num_bytes_downloaded
            await resp.aclose()
            raise err

        async with self.session(bulk=True) as session:
            try:
                resp: httpx.Response = await self.retrying()(attempt)
            except SnfsError as err:
                raise self.failed(err) from None
            try:
                yield resp
            finally:
                self.stats.bytes_in += resp.num_bytes_downloaded
                await resp.aclose()

    async def stream(
        self,
        kind: str,
        path: str,
        *,
        offset: int = 0,
        expected_size: int | None = None,
        params: dict[str, Any] | None = None,
        fetch: Fetch | None = None,
        spare: bool = False,
    ) -> AsyncGenerator[bytes, None]:
        """The body of a GET from `offset` on: the one download loop of every backend.

        A broken transfer is asked for again from where it stopped (`fetch` decides how: Range,
        or asking for the whole body again and skipping what was delivered) within the resume
        budget (`Resume`). The last piece of a body is held back until `fetch` has verified
        the whole answer, so a wrong body never completes at the caller. `spare`: the request
        runs in the spare session (a download feeding an upload that holds a session).
        """
        fetch = fetch or Fetch()
        url = self.base + path
        delivered = 0  # bytes yielded to the caller
        total = expected_size  # the file's size, when known
        resume = Resume(self, path, fetch.what or path, fetch.verb)
        while True:
            pos = offset + delivered
            if total is not None and pos >= total:
                return
            resume.attempt()
            progress = False
            try:
                async with self.session(spare, bulk=True) as session:
                    self.count(kind)
                    headers = fetch.headers(pos)
                    request = self.http.build_request("GET", url, params=params, headers=headers)
                    started = time.monotonic()
                    resp = await self.send_in(session, request, stream=True)
                    try:
                        self.log.debug(
                            "GET %s (from %d) -> %d (%.0f ms)",
                            path,
                            pos,
                            resp.status_code,
                            (time.monotonic() - started) * 1000,
                        )
                        answer = await fetch.answer(self, resp, pos, kind, path)
                        if answer is None:
                            return  # nothing left to read (e.g. 416 at the end)
                        if total is None:
                            total = answer.total
                        skip, held = answer.skip, b""
                        async for chunk in answer.body:
                            resume.reached(len(chunk))
                            part = skip.take(chunk)
                            if part is None:
                                continue
                            if held:
                                delivered += len(held)
                                progress = True
                                yield held
                            held = part
                        answer.verify(total)
                        if held:
                            delivered += len(held)
                            progress = True
                            yield held
                        if skip.left:
                            return  # offset past the end
                        if total is not None and offset + delivered < total:
                            raise httpx.RemoteProtocolError(
                                f"body ended at {offset + delivered} of {total} bytes"
                            )
                        return
                    finally:
                        self.stats.bytes_in += resp.num_bytes_downloaded
                        fetch.after(resp)
                        await resp.aclose()
            except (*DOWNLOAD_BREAKS, SnfsError) as e:
                err = resume.error_of(e)
            await resume.pause(err, progress, offset + delivered)

    async def stream_into(
        self,
        kind: str,
        path: str,
        sink: Sink,
        *,
        offset: int = 0,
        expected_size: int | None = None,
        params: dict[str, Any] | None = None,
        fetch: Fetch | None = None,
        spare: bool = False,
    ) -> None:
        """`stream`, with the bytes received, checked and put into `sink` by a worker thread
        (`snfs.transfer`): the same resume budget, the same checks of each answer, the same
        rule that the body's end (here the file's last byte) waits for the whole body's
        verification. The event loop
        takes the session, authorizes each attempt and decides what follows a break."""
        fetch = fetch or Fetch()
        run = _Run(offset, expected_size)
        resume = Resume(self, path, fetch.what or path, fetch.verb)
        reauthorized = False
        while True:
            if run.total is not None and run.at >= run.total:
                return
            resume.attempt()
            before = run.delivered
            try:
                async with self.session(spare, bulk=True) as session:
                    self.count(kind)
                    request = self.http.build_request(
                        "GET", self.base + path, params=params, headers=fetch.headers(run.at)
                    )
                    flow = await self._authorize(request)
                    attempt = _WorkerAttempt(self, session, request, fetch, kind, path, run)
                    attempt.resume, attempt.sink = resume, sink
                    try:
                        if await in_worker(attempt.run, attempt.cancel):
                            return
                        # A 401: the auth gets one chance to refresh its token.
                        assert attempt.unauthorized is not None and attempt.refusal is not None
                        if reauthorized or flow is None:
                            raise attempt.refusal
                        reauthorized = True
                        await _reauthorize(flow, attempt.unauthorized)
                        continue
                    finally:
                        self.stats.bytes_in += attempt.bytes_in
                        if attempt.resp is not None:
                            fetch.after(attempt.resp)
                        if flow is not None:
                            with trio.CancelScope(shield=True):
                                await flow.aclose()
            except (*DOWNLOAD_BREAKS, SnfsError) as e:
                err = resume.error_of(e)
            await resume.pause(err, run.delivered > before, run.at)

    async def _authorize(self, request: httpx.Request) -> AsyncGenerator[Any, Any] | None:
        """Put the auth's headers on a worker's request (an OAuth token is fetched or
        refreshed here, on the event loop); the auth flow, to hand it a 401."""
        if self.auth is None:
            return None
        flow: Any = self.auth.async_auth_flow(request)
        authorized = await flow.__anext__()
        request.headers.update(authorized.headers)
        return cast(AsyncGenerator[Any, Any], flow)


async def _reauthorize(flow: AsyncGenerator[Any, Any], resp: httpx.Response) -> None:
    """Hand a 401 to the auth flow that authorized its request: it refreshes its token."""
    with contextlib.suppress(StopAsyncIteration):
        await flow.asend(resp)


@dataclass
class _Run:
    """Where one `stream_into` stands: bytes put into the sink, and the file's size."""

    offset: int
    total: int | None
    delivered: int = 0

    @property
    def at(self) -> int:
        return self.offset + self.delivered


class _WorkerAttempt:
    """One request of a `stream_into`, run in its worker thread (`run`) and stopped from
    the event loop (`cancel`)."""

    resume: Resume
    sink: Sink

    def __init__(
        self,
        core: HttpCore,
        session: Session,
        request: httpx.Request,
        fetch: Fetch,
        kind: str,
        path: str,
        run: _Run,
    ) -> None:
        self.core, self.session, self.request, self.fetch = core, session, request, fetch
        self.kind, self.path, self.state = kind, path, run
        self.resp: httpx.Response | None = None
        self.bytes_in = 0
        self.direct_in = 0  # body bytes received past httpx (`WorkerAnswer.receive`)
        self.unauthorized: httpx.Response | None = None
        self.refusal: SnfsError | None = None
        self._lock = threading.Lock()  # resp: set, used by cancel, and closed
        self._open: httpx.Response | None = None
        self._stopped = False

    def run(self) -> bool:
        """In the worker thread: True when the stream is over, False to ask again."""
        core, run = self.core, self.state
        pos = run.at
        self.session.cookies.set_cookie_header(self.request)
        started = time.monotonic()
        resp = core.worker_http.send(self.request, stream=True)
        with self._lock:
            self.resp = self._open = resp
            stopped = self._stopped
        try:
            if stopped:
                raise Stop()
            self.session.cookies.extract_cookies(resp)
            core.log.debug(
                "GET %s (from %d) -> %d (%.0f ms, worker)",
                self.path,
                pos,
                resp.status_code,
                (time.monotonic() - started) * 1000,
            )
            if resp.status_code == 401 and core.auth is not None:
                resp.read()
                self.unauthorized = resp
                self.refusal = core.refused_download(resp, self.kind, self.path)
                return False
            answer = self.fetch.answer_in_worker(core, resp, pos, self.kind, self.path)
            if answer is None:
                return True  # nothing left to read (e.g. 416 at the end)
            if run.total is None:
                run.total = answer.total
            self._receive(answer)
            if answer.skip.left:
                return True  # offset past the end
            if run.total is not None and run.at < run.total:
                raise httpx.RemoteProtocolError(f"body ended at {run.at} of {run.total} bytes")
            return True
        finally:
            with self._lock:
                self._open = None
            self.bytes_in = resp.num_bytes_downloaded + self.direct_in
            resp.close()

    def _receive(self, answer: WorkerAnswer) -> None:
        """Body → check → sink, in batches; what arrived before a break is kept."""
        run, stop = self.state, False
        blocks = Blocks(run.at, run.total)
        try:
            if answer.receive is not None:
                self._receive_into(answer, answer.receive, blocks)
            else:
                for chunk in answer.body:
                    self.resume.reached(len(chunk))
                    part = answer.skip.take(chunk)
                    if part is not None:
                        blocks.add(part)
                        self._batch(blocks, answer)
            _absorb(answer, blocks)
            answer.verify(run.total)
            blocks.release()
        except Stop:
            stop = True
            raise
        finally:
            if blocks.ready and not stop and not self._stopped:
                run.delivered += put(self.sink, blocks.take())

    def _receive_into(
        self, answer: WorkerAnswer, receive: Callable[[memoryview], int], blocks: Blocks
    ) -> None:
        """The body received straight into the blocks (one copy, by the kernel); what a
        resume without Range skips is received into the free part of a block and dropped."""
        skip = answer.skip
        while True:
            room = blocks.room()
            if skip.left:
                room = room[: skip.left]
            n = receive(room)
            if not n:
                return
            self.direct_in += n
            self.resume.reached(n)
            if skip.left:
                answer.absorb(room[:n])  # the check sees the whole body, in order
                skip.left -= n
                continue
            blocks.added(n)
            self._batch(blocks, answer)

    def _batch(self, blocks: Blocks, answer: WorkerAnswer) -> None:
        """Put what was gathered: a whole batch, or less when a reader waits for it."""
        if blocks.due(self.sink):
            _absorb(answer, blocks)
            self.state.delivered += put(self.sink, blocks.take())

    def cancel(self) -> None:
        """On the event loop: stop the worker, at once even while it waits for bytes."""
        with self._lock:
            self._stopped = True
            resp = self._open
            if resp is None:
                return
            stream = resp.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class WorkerAnswer:
    """`Answer` for a worker thread: the body is a plain iterator, which checks its pieces
    itself. Or, where the transport can (`wire.readinto`: an identity body), `receive`:
    at most one receive into the buffer given, 0 at the body's end; the worker then hands
    every byte received, in order, to `absorb` (the check) before `verify`."""

    skip: Skip
    total: int | None
    body: Iterator[bytes]
    verify: Callable[[int | None], None] = lambda total: None
    receive: Callable[[memoryview], int] | None = None
    absorb: Callable[[memoryview], None] = lambda view: None


def _absorb(answer: WorkerAnswer, blocks: Blocks) -> None:
    """Hand the bytes received since the last call to the answer's check."""
    for view in blocks.fresh():
        answer.absorb(view)


@dataclass
class Answer:
    """How to read one answer of a download: what to skip of it, the file's size when the
    answer tells, the body, and the check of the whole body (raises if it is not the file)."""

    skip: Skip
    total: int | None
    body: AsyncIterator[bytes]
    verify: Callable[[int | None], None] = lambda total: None


class Fetch:
    """What a system adds to `HttpCore.stream`. This default fits APIs without Range: every
    attempt asks for the whole body (any 2xx), skips what was delivered, and takes an identity
    `Content-Length` as the file's size."""

    what: str | None = None  # how log lines name the file (default: its path)
    verb = "asking again"

    def headers(self, pos: int) -> dict[str, str]:
        return {"Accept": "*/*"}

    async def answer(
        self, core: HttpCore, resp: httpx.Response, pos: int, kind: str, path: str
    ) -> Answer | None:
        if not resp.is_success:
            raise await core.read_error(resp, kind, path)
        return Answer(Skip(pos), _content_length(resp), resp.aiter_bytes(CHUNK))

    def answer_in_worker(
        self, core: HttpCore, resp: httpx.Response, pos: int, kind: str, path: str
    ) -> WorkerAnswer | None:
        """`answer`, called in a download's worker thread (`HttpCore.stream_into`)."""
        if not resp.is_success:
            resp.read()
            raise core.refused_download(resp, kind, path)
        return WorkerAnswer(
            Skip(pos), _content_length(resp), resp.iter_bytes(), receive=wire.readinto(resp)
        )

    def after(self, resp: httpx.Response) -> None:
        """Sees each answer once it is done with (e.g. to learn the server's clock)."""


class SentBody(Protocol):
    """An upload attempt's body: `complete` once all its content was handed to the
    connection."""

    complete: bool


T = TypeVar("T")
B = TypeVar("B", bound=SentBody)


async def upload_once(
    core: HttpCore,
    send: Callable[[], Awaitable[T]],
    bodies: Sequence[B],
    what: str,
    look: Callable[[B], Awaitable[T | None]] | None,
    *,
    rounds: int = 3,
) -> T:
    """An upload (not idempotent) whose outcome may be in doubt, stored at most once: the one
    routine of every backend.

    `send` makes one attempt (through `core.send(..., idempotent=False, log_failure=False)`,
    each attempt appending its body to `bodies`). What provably did not reach the server is
    retried by `core.send` itself. When in doubt (the connection broke or timed out after
    sending, 502/504, an answer that does not prove the upload stored): if the content never
    fully left, the server cannot have stored it and it is sent again; if it did, `look` looks
    for what the attempt may have stored, which is then the result (without `look`, nothing
    can be proven: the upload fails). At most `rounds` attempts and `retry_total_seconds`;
    the failure that ends it is logged once.
    """
    deadline = time.monotonic() + core.settings.retry_total_seconds
    for round_ in range(1, rounds + 1):
        try:
            return await send()
        except SnfsError as err:
            if not err.in_doubt:
                raise core.failed(err) from None
            last = bodies[-1] if bodies else None
            if last is not None and last.complete:
                if look is None:
                    raise core.failed(err) from None
                core.log.info(
                    "upload of %s in doubt (%s); looking for it before sending again",
                    what,
                    err.message,
                )
                found = await look(last)
                if found is not None:
                    core.log.info("upload of %s found; not sending it again", what)
                    return found
            else:
                core.log.debug("upload of %s broke while sending (%s); sending again", what, err)
            if round_ == rounds or time.monotonic() > deadline:
                raise core.failed(err) from None
            core.stats.retries += 1
    raise AssertionError("unreachable")


class Skip:
    """Drops the first `left` bytes of a body: a transfer asked for again without Range
    starts at byte 0 again."""

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self, chunk: bytes) -> bytes | None:
        """What of `chunk` is past the skipped part; None while all of it is skipped."""
        if not self.left:
            return chunk
        if len(chunk) <= self.left:
            self.left -= len(chunk)
            return None
        chunk, self.left = chunk[self.left :], 0
        return chunk


class Resume:
    """The retry budget of one download that resumes after each break: `retry_attempts`
    breaks in a row without progress and `retry_total_seconds` since the last progress (a
    slow transfer that keeps moving is never given up on); each failure that ends it is
    reported through `core.failed`. A transfer that breaks at the same point again and again
    is cut by the instance's transaction quota: the error then says so."""

    def __init__(self, core: HttpCore, path: str, what: str, verb: str) -> None:
        self.core, self.path, self.what, self.verb = core, path, what, verb
        self.failures = 0
        self.since = time.monotonic()  # the last progress (or the start)
        self.backoff = core.backoff()
        self.position = 0  # bytes of the body the current attempt got
        self.cuts: list[int] = []  # where attempts without progress broke

    def attempt(self) -> None:
        """A new request for the body starts."""
        self.position = 0

    def reached(self, n: int) -> None:
        """`n` more bytes of the current attempt's body arrived."""
        self.position += n

    def error_of(self, exc: Exception) -> SnfsError:
        """The error a broken attempt ended with; one that cannot be retried is raised."""
        if isinstance(exc, SnfsError):
            if not retryable(exc):
                raise self.core.failed(exc) from None
            return exc
        err = transport_error(exc, "GET", self.path)
        err.retryable = True
        if not retryable(err):
            raise self.core.failed(err) from None
        return err

    async def pause(self, err: SnfsError, progress: bool, at: int) -> None:
        """Wait before the next attempt, or raise `err` when the budget is spent."""
        s = self.core.settings
        now = time.monotonic()
        if progress:
            self.failures, self.since, self.cuts = 1, now, []
        else:
            self.failures += 1
        if self.position:
            self.cuts.append(self.position)
        wait = max(err.retry_after or 0.0, self.backoff(BackoffState(self.failures)))
        if self.failures >= s.retry_attempts or now - self.since + wait >= s.retry_total_seconds:
            raise self.core.failed(self.quota_cut() or err) from None
        self.core.stats.retries += 1
        self.core.log.debug(
            "download of %s broke at %d bytes (%s); %s in %.2f s",
            self.what,
            at,
            err.message,
            self.verb,
            wait,
        )
        await trio.sleep(wait)

    def quota_cut(self) -> SnfsError | None:
        """The error for a transfer cut near the same point each time (within 10 %), if so."""
        if len(self.cuts) < 2 or min(self.cuts) < max(self.cuts) * 0.9:
            return None
        return QuotaCut(
            f"GET {self.path}: cut {len(self.cuts)} times near byte {min(self.cuts)}: the "
            "instance's transaction quota (REST Attachment API request timeout) ends this "
            "download before it can finish; ask its admin to raise that quota",
            instance_message="transaction quota",
            method="GET",
            path=self.path,
        )


def _content_length(resp: httpx.Response) -> int | None:
    if resp.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return None  # Content-Length counts the encoded bytes; httpx counts them too, but skip
    try:
        return int(resp.headers["content-length"])
    except (KeyError, ValueError):
        return None
