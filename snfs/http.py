"""A small HTTP core shared by the non-ServiceNow backends (snfs.backends.*).

It carries `snfs.client`'s policy over to any JSON-ish API, reusing its helpers (error mapping,
transport-error mapping, `Retry-After`, retryability) rather than copying them:

- one `httpx.AsyncClient` per backend: pool sized to `max_in_flight`, HTTP/1.1, TLS
  verification on, no redirects (credentials never travel to another host);
- a semaphore bounds the requests in flight;
- a tenacity loop (exponential backoff with full jitter, `Retry-After` honoured, bounded in
  attempts and total time) retries connection errors, timeouts, 429 and 503 always, 502/504
  only for idempotent requests. A non-idempotent request (POST) is retried only when it
  provably did not reach the server (connect errors, 429, 503); otherwise the error is raised
  with `in_doubt = True` for the caller to resolve;
- each failure that reaches the caller is logged exactly once (logger `snfs.http`), from
  method, path and the server's own message only: never a credential;
- downloads resume after a broken connection by asking again and skipping what was already
  delivered (these APIs show no Range support).

`snfs/client.py` keeps its own copy of the request loop for now; the helpers named `_x` below
are imported from it on purpose (the lead moves them here later).
"""
from __future__ import annotations

import json as _json
import logging
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt,
                      stop_before_delay, wait_random_exponential)

from snfs import __version__
from snfs.client import (CHUNK, _DOWNLOAD_BREAKS, _NOT_SENT, _FakeState, _http_error,
                         _retryable, _transport_error)
from snfs.errors import ServerError, SnfsError
from snfs.secrets import Secret

log = logging.getLogger("snfs.http")

__all__ = ["CHUNK", "ErrorMapper", "HttpCore", "HttpSettings", "HttpStats", "HeaderToken",
           "http_error"]

ErrorMapper = Callable[[httpx.Response, str, str, str], SnfsError]
http_error: ErrorMapper = _http_error


@dataclass
class HttpStats:
    """Counters for `snfs status` (same shape as `snfs.client.ClientStats`)."""
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
        return {"requests": dict(self.requests), "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "retries": self.retries, "errors": self.errors}


@dataclass
class HttpSettings:
    base_url: str                      # scheme://host[:port][/prefix], no trailing slash
    timeout: float = 30.0
    max_in_flight: int = 8
    verify: bool | str = True          # str = CA bundle path
    retry_attempts: int = 6
    retry_total_seconds: float = 60.0
    retry_base_delay: float = 0.5
    retry_max_delay: float = 15.0
    user_agent: str = f"snfs/{__version__}"


class HeaderToken(httpx.Auth):
    """A static token sent in a header (Huawei's `X-Auth-Token`); never shown by repr/str."""

    def __init__(self, header: str, token: "str | Secret") -> None:
        self.header = header
        self._token = Secret(token)

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers[self.header] = self._token.reveal()
        yield request

    def __repr__(self) -> str:
        return f"HeaderToken({self.header!r}, ***)"


class HttpCore:
    def __init__(self, settings: HttpSettings, auth: httpx.Auth | None, *,
                 stats: HttpStats, error_mapper: ErrorMapper = http_error,
                 default_headers: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.stats = stats
        self.map_error = error_mapper
        self.base = settings.base_url.rstrip("/")
        self.sem = trio.Semaphore(max(1, settings.max_in_flight))
        verify: Any = settings.verify
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        pool = max(1, settings.max_in_flight) + 2
        headers = {"User-Agent": settings.user_agent}
        headers.update(default_headers or {})
        self.http = httpx.AsyncClient(
            auth=auth, verify=verify, http2=False, timeout=httpx.Timeout(settings.timeout),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool,
                                keepalive_expiry=30.0),
            headers=headers, follow_redirects=False)

    def __repr__(self) -> str:
        return f"HttpCore({self.base!r})"

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- retry policy ------------------------------------------------------------------------

    def _backoff(self) -> Any:
        s = self.settings
        return wait_random_exponential(multiplier=s.retry_base_delay, max=s.retry_max_delay)

    def retrying(self, attempts: int | None = None) -> AsyncRetrying:
        s = self.settings
        backoff = self._backoff()

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            return max(getattr(exc, "retry_after", None) or 0.0, backoff(rs))

        def before_sleep(rs: RetryCallState) -> None:
            self.stats.retries += 1
            exc = rs.outcome.exception() if rs.outcome else None
            log.debug("retrying in %.2f s after: %s", rs.upcoming_sleep, exc)

        return AsyncRetrying(
            sleep=trio.sleep,
            stop=stop_after_attempt(attempts or s.retry_attempts)
            | stop_before_delay(s.retry_total_seconds),
            wait=wait, retry=retry_if_exception(_retryable), before_sleep=before_sleep,
            reraise=True)

    def failed(self, err: SnfsError) -> SnfsError:
        """Count and log a failure that reaches the caller: exactly one line, no secrets."""
        self.stats.errors += 1
        if err.status:
            what = f"{err.status} {err.instance_message or ''}".rstrip()
        else:
            prefix = f"{err.method} {err.path}: "
            what = err.message[len(prefix):] if err.message.startswith(prefix) else err.message
        log.warning("%s %s failed: %s", err.method, err.path, what)
        return err

    # -- buffered requests -------------------------------------------------------------------

    async def send(self, kind: str, method: str, path: str, *,
                   params: dict[str, Any] | None = None, json: Any = None,
                   body: Callable[[], AsyncIterable[bytes]] | None = None,
                   headers: dict[str, str] | None = None, idempotent: bool = True,
                   allow: tuple[int, ...] = (), attempts: int | None = None,
                   log_failure: bool = True,
                   on_attempt: Callable[[], None] | None = None) -> httpx.Response:
        """One logical request with retries; the response with its body read.

        Raises the mapped `SnfsError` unless the status is 2xx or in `allow`. `path` is
        relative to the base URL and is what errors and logs show.
        """
        url = self.base + path

        async def attempt() -> httpx.Response:
            if on_attempt is not None:
                on_attempt()
            hdrs = {"Accept": "application/json"}
            hdrs.update(headers or {})
            content: Any = body() if body is not None else None
            if json is not None:
                content = _json.dumps(json).encode()
                hdrs["Content-Type"] = "application/json"
                self.stats.bytes_out += len(content)
            request = self.http.build_request(method, url, params=params, content=content,
                                              headers=hdrs)
            self.stats.requests[kind] = self.stats.requests.get(kind, 0) + 1
            started = time.monotonic()
            async with self.sem:
                try:
                    resp = await self.http.send(request)
                except httpx.TransportError as e:
                    err = _transport_error(e, method, path)
                    not_sent = isinstance(e, _NOT_SENT)
                    err.retryable = idempotent or not_sent  # type: ignore[attr-defined]
                    err.in_doubt = not idempotent and not not_sent  # type: ignore[attr-defined]
                    log.debug("%s %s: %s", method, path, err.message)
                    raise err from None
                except httpx.HTTPError as e:
                    raise ServerError(f"{method} {path}: {type(e).__name__}: {e}",
                                      method=method, path=path) from None
            self.stats.bytes_in += resp.num_bytes_downloaded
            log.debug("%s %s -> %d (%.0f ms)", method, path, resp.status_code,
                      (time.monotonic() - started) * 1000)
            if resp.is_success or resp.status_code in allow:
                return resp
            err = self.map_error(resp, kind, method, path)
            status = resp.status_code
            if status in (429, 503):
                err.retryable = True  # type: ignore[attr-defined]
            elif status in (502, 504):
                err.retryable = idempotent  # type: ignore[attr-defined]
                err.in_doubt = not idempotent  # type: ignore[attr-defined]
            raise err

        try:
            return await self.retrying(attempts)(attempt)
        except SnfsError as err:
            if getattr(err, "in_doubt", False) or not log_failure:
                raise err
            raise self.failed(err) from None

    # -- streamed responses ------------------------------------------------------------------

    @asynccontextmanager
    async def open(self, kind: str, path: str, *, params: dict[str, Any] | None = None,
                   allow: tuple[int, ...] = ()) -> AsyncIterator[httpx.Response]:
        """A GET whose body is not read: for its headers, or to stream it. Retries failures
        to connect and 429/5xx before the body; a status outside 2xx/`allow` raises."""
        url = self.base + path

        async def attempt() -> httpx.Response:
            self.stats.requests[kind] = self.stats.requests.get(kind, 0) + 1
            request = self.http.build_request("GET", url, params=params, headers={"Accept": "*/*"})
            try:
                resp = await self.http.send(request, stream=True)
            except httpx.TransportError as e:
                err = _transport_error(e, "GET", path)
                err.retryable = True  # type: ignore[attr-defined]
                raise err from None
            if resp.is_success or resp.status_code in allow:
                return resp
            await resp.aread()
            self.stats.bytes_in += resp.num_bytes_downloaded
            await resp.aclose()
            err = self.map_error(resp, kind, "GET", path)
            err.retryable = resp.status_code in (429, 502, 503, 504)  # type: ignore[attr-defined]
            raise err

        async with self.sem:
            try:
                resp = await self.retrying()(attempt)
            except SnfsError as err:
                raise self.failed(err) from None
            try:
                yield resp
            finally:
                self.stats.bytes_in += resp.num_bytes_downloaded
                await resp.aclose()

    async def stream(self, kind: str, path: str, *, offset: int = 0,
                     expected_size: int | None = None,
                     params: dict[str, Any] | None = None) -> AsyncIterator[bytes]:
        """The body of a GET from `offset` on; a broken transfer is asked for again and what
        was already delivered is skipped (no Range). Bounded like `send`."""
        s = self.settings
        url = self.base + path
        delivered = 0
        failures = 0
        started = time.monotonic()
        backoff = self._backoff()
        while True:
            skip = offset + delivered
            if expected_size is not None and skip >= expected_size:
                return
            progress = False
            try:
                async with self.sem:
                    self.stats.requests[kind] = self.stats.requests.get(kind, 0) + 1
                    request = self.http.build_request("GET", url, params=params,
                                                      headers={"Accept": "*/*"})
                    resp = await self.http.send(request, stream=True)
                    try:
                        if not resp.is_success:
                            await resp.aread()
                            err = self.map_error(resp, kind, "GET", path)
                            err.retryable = resp.status_code in (429, 502, 503, 504)  # type: ignore[attr-defined]
                            raise err
                        total = _content_length(resp)
                        async for chunk in resp.aiter_bytes(CHUNK):
                            if skip:
                                if len(chunk) <= skip:
                                    skip -= len(chunk)
                                    continue
                                chunk = chunk[skip:]
                                skip = 0
                            delivered += len(chunk)
                            progress = True
                            yield chunk
                        if total is not None and resp.num_bytes_downloaded < total:
                            raise httpx.RemoteProtocolError(
                                f"body ended at {resp.num_bytes_downloaded} of {total} bytes")
                        return
                    finally:
                        self.stats.bytes_in += resp.num_bytes_downloaded
                        await resp.aclose()
            except _DOWNLOAD_BREAKS as e:
                err = _transport_error(e, "GET", path)
                err.retryable = True  # type: ignore[attr-defined]
            except SnfsError as e:
                err = e
                if not _retryable(err):
                    raise self.failed(err) from None
            failures = 1 if progress else failures + 1
            wait = max(getattr(err, "retry_after", None) or 0.0, backoff(_FakeState(failures)))
            if failures >= s.retry_attempts or time.monotonic() - started + wait >= s.retry_total_seconds:
                raise self.failed(err) from None
            self.stats.retries += 1
            log.debug("download of %s broke at %d bytes (%s); asking again in %.2f s",
                      path, offset + delivered, err.message, wait)
            await trio.sleep(wait)


def _content_length(resp: httpx.Response) -> int | None:
    if resp.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return None   # Content-Length counts the encoded bytes; httpx counts them too, but skip
    try:
        return int(resp.headers["content-length"])
    except (KeyError, ValueError):
        return None
