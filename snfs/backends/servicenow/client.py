"""The ServiceNow Attachment API client (no FUSE code here).

The request policy (pool, semaphore, tenacity retries, error mapping, one log line per failure)
is `snfs.http.HttpCore`'s; this client gives it the ServiceNow parts: the `/api/now` base, the
logger `snfs.client`, clock learning from `Date`, OAuth's resend-once after a 401 on a
streamed body, and the instance's own words (`servicenow_error`: MFA, size and extension
refusals). Every buffered request goes through `_send`. Downloads (`stream`) have their own
loop because they use Range where the instance honours it, resume where a broken connection
stopped, and verify what they got against the attachment's metadata (`X-Attachment-Metadata`:
size and SHA-256). Uploads are not idempotent: see `upload`.
"""

from __future__ import annotations

import email.utils
import hashlib
import json as _json
import logging
import mimetypes
import re
import secrets as _secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import trio

from snfs import __version__, transfer, wire
from snfs.backend import RemoteFile
from snfs.backends.common import check_url, multipart_quote, validate_file_name
from snfs.backends.servicenow import query as _q
from snfs.compressible import gzip_pays
from snfs.errors import (
    ExtensionRefused,
    InvalidInput,
    MfaRequired,
    NotTheContent,
    QuotaCut,
    ServerError,
    SnfsError,
    TooLarge,
    Unsupported,
)
from snfs.http import (
    CHUNK,
    HTML_PAGE,
    Answer,
    Fetch,
    HttpCore,
    HttpSettings,
    HttpStats,
    SendState,
    Skip,
    WorkerAnswer,
    http_error,
    is_html,
    upload_once,
)
from snfs.transfer import Sink

log = logging.getLogger("snfs.client")

__all__ = [
    "Attachment",
    "AttachmentClient",
    "ClientConfig",
    "ClientStats",
    "normalize_instance_url",
    "UploadSource",
]

API_PATH = "/api/now"
QUOTA_MEMORY = 10.0  # s: a download the quota cut is not asked for again sooner
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REQUEST_KINDS = ("list", "get", "file", "upload", "delete", "rename", "stats", "table", "auth")

UploadSource = Path | bytes | Callable[[], AsyncIterable[bytes]]

MFA_MESSAGE = (
    "the user has multi-factor authentication (401 with X-MFA_TOKEN): the REST API refuses "
    "its password alone; use OAuth (--oauth-client-id ID with --oauth-secret-file FILE) or an "
    "integration user without MFA"
)


def servicenow_error(resp: httpx.Response, kind: str, method: str, path: str) -> SnfsError:
    """`http_error` with what only ServiceNow's answers say: MFA by its header, and the
    undocumented upload refusals (size over com.glide.attachment.max_size, an extension outside
    glide.attachment.extensions) by their message."""
    status = resp.status_code
    if status == 401 and "x-mfa_token" in resp.headers:
        err = http_error(resp, kind, method, path, MfaRequired)
        err.message = f"{method} {path}: 401: {MFA_MESSAGE}"
        return err
    cls: type[SnfsError] | None = None
    if status == 400 and kind == "upload":
        from snfs.http import error_message

        text = " ".join(error_message(resp)).lower()
        if "extension" in text:
            cls = ExtensionRefused
        elif re.search(r"size|max|large|exceed", text):
            cls = TooLarge
    return http_error(resp, kind, method, path, cls)


_http_error = servicenow_error  # its old private name here (tests import it)


# ----------------------------------------------------------------------------------------------
# Data


# Upload sources are read from disk in large pieces: each read is one hop to a worker thread.
FILE_CHUNK = 1 << 20


def _str(v: Any) -> str:
    if isinstance(v, dict):  # sysparm_display_value=all style {"value":..,"display_value":..}
        v = v.get("value", "")
    return "" if v is None else str(v)


def _int(v: Any) -> int:
    try:
        return int(_str(v) or 0)
    except ValueError:
        return 0


def _time(v: Any) -> datetime:
    s = _str(v)
    try:  # fromisoformat is C and takes "YYYY-MM-DD HH:MM:SS"; strptime was hot in listings
        return datetime.fromisoformat(s).replace(tzinfo=UTC)
    except ValueError:
        return EPOCH


class Attachment(RemoteFile):
    """A `sys_attachment` row: the seam's `snfs.backend.RemoteFile` (this name is kept for
    the code that imports it from here), read from the API's JSON."""

    __slots__ = ()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Attachment:
        d = d or {}
        return cls(
            sys_id=_str(d.get("sys_id")),
            table_name=_str(d.get("table_name")),
            table_sys_id=_str(d.get("table_sys_id")),
            file_name=_str(d.get("file_name")),
            size_bytes=_int(d.get("size_bytes")),
            content_type=_str(d.get("content_type")),
            created_on=_time(d.get("sys_created_on")),
            updated_on=_time(d.get("sys_updated_on")),
            created_by=_str(d.get("sys_created_by")),
            hash=_str(d.get("hash")),
            download_link=_str(d.get("download_link")),
            state=_str(d.get("state")),
        )


@dataclass
class ClientStats(HttpStats):
    """Counters for `snfs status`: `HttpStats` with ServiceNow's request kinds."""

    kinds: tuple[str, ...] = REQUEST_KINDS


# ----------------------------------------------------------------------------------------------
# Configuration


def normalize_instance_url(instance: str, *, allow_insecure_http: bool = False) -> str:
    """`dev12345` -> `https://dev12345.service-now.com`; a URL is kept (without a trailing
    slash). Plain http only for a loopback host or with `allow_insecure_http`."""
    s = (instance or "").strip()
    if s and "://" not in s and re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", s):
        s = f"https://{s.lower()}.service-now.com"
    url = check_url(s, allow_insecure_http=allow_insecure_http)
    return url[: -len(API_PATH)] if url.endswith(API_PATH) else url


@dataclass
class ClientConfig:
    base_url: str  # already normalized
    auth: httpx.Auth | None
    max_in_flight: int = 8  # semaphore on requests in flight
    verify: bool | str = True  # TLS verification on by default; str = CA bundle path
    timeout: float = 30.0  # per-request connect/read timeout
    retry_total_seconds: float = 60.0  # bounded total retry time
    retry_attempts: int = 6
    user_agent: str = f"snfs/{__version__}"
    retry_base_delay: float = 0.5  # first backoff ceiling; doubles per attempt (full jitter)
    retry_max_delay: float = 15.0  # backoff ceiling
    in_doubt_wait: float | None = (
        None  # how long an in-doubt upload is looked for (default max(timeout, 5))
    )
    gzip_always: bool = False  # ask for gzip for every download (default: text-like only)

    def __repr__(self) -> str:
        return (
            f"ClientConfig(base_url={self.base_url!r}, auth={self.auth!r}, "
            f"max_in_flight={self.max_in_flight}, verify={self.verify!r}, "
            f"timeout={self.timeout})"
        )


def _settings(config: ClientConfig) -> HttpSettings:
    """The core's settings for an instance: its Table/Attachment API base and the limits."""
    return HttpSettings(
        config.base_url.rstrip("/") + API_PATH,
        timeout=config.timeout,
        max_in_flight=config.max_in_flight,
        verify=config.verify,
        retry_attempts=config.retry_attempts,
        retry_total_seconds=config.retry_total_seconds,
        retry_base_delay=config.retry_base_delay,
        retry_max_delay=config.retry_max_delay,
        user_agent=config.user_agent,
    )


# ----------------------------------------------------------------------------------------------
# Helpers


_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,<]*)*)")


def _parse_link(header: str | None) -> dict[str, str]:
    links: dict[str, str] = {}
    for m in _LINK_RE.finditer(header or ""):
        rel = re.search(r'rel\s*=\s*"?([^";,]+)"?', m.group(2))
        if rel:
            for name in rel.group(1).split():
                links.setdefault(name.lower(), m.group(1))
    return links


def _offset_of(url: str) -> int | None:
    try:
        return int(parse_qs(urlsplit(url).query)["sysparm_offset"][0])
    except (KeyError, IndexError, ValueError):
        return None


def _multipart_frame(
    boundary: str, fields: list[tuple[str, str]], file_part: str, file_name: str, content_type: str
) -> tuple[bytes, bytes]:
    """Bytes before and after the file content of a multipart/form-data body whose file part
    comes last, as the instance requires."""
    b = boundary.encode()
    head = b""
    for name, value in fields:
        head += (
            b"--"
            + b
            + b'\r\nContent-Disposition: form-data; name="'
            + name.encode()
            + b'"\r\n\r\n'
            + value.encode()
            + b"\r\n"
        )
    head += (
        b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="'
        + file_part.encode()
        + b'"; filename="'
        + multipart_quote(file_name).encode()
        + b'"\r\nContent-Type: '
        + content_type.encode()
        + b"\r\n\r\n"
    )
    tail = b"\r\n--" + b + b"--\r\n"
    return head, tail


class _Body:
    """One attempt's request body: frames, hashes and counts the content as it is sent."""

    def __init__(
        self,
        client: AttachmentClient,
        opener: Callable[[], AsyncIterable[bytes]],
        size: int | None,
        head: bytes = b"",
        tail: bytes = b"",
    ) -> None:
        self.client, self.opener, self.size, self.head, self.tail = client, opener, size, head, tail
        self.digest = hashlib.sha256()
        self.sent = 0
        self.complete = False  # all content read and handed to the connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.head:
            self.client.stats.bytes_out += len(self.head)
            yield self.head
        # A file is read and hashed by a worker thread while the event loop sends.
        in_worker = isinstance(self.opener, _FileSource)
        chunks = self.opener(self.digest) if in_worker else self.opener()  # type: ignore[call-arg]
        async for chunk in chunks:
            if not chunk:
                continue
            self.sent += len(chunk)
            if self.size is not None and self.sent > self.size:
                raise InvalidInput(f"upload source is larger than the {self.size} bytes announced")
            if not in_worker:
                self.digest.update(chunk)
            self.client.stats.bytes_out += len(chunk)
            yield bytes(chunk)
        if self.size is not None and self.sent != self.size:
            raise InvalidInput(f"upload source has {self.sent} bytes, {self.size} announced")
        self.complete = True
        if self.tail:
            self.client.stats.bytes_out += len(self.tail)
            yield self.tail


class _FileSource:
    """An upload's file, read and hashed by a worker thread (`snfs.transfer.file_chunks`)."""

    def __init__(self, path: Path, want: int) -> None:
        self.path, self.want = path, want

    async def __call__(self, digest: Any = None) -> AsyncIterator[bytes]:
        chunks = transfer.file_chunks(self.path, self.want, digest)
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
        except OSError as e:
            raise InvalidInput(f"upload source {self.path}: {e.strerror}") from None


def _opener(
    source: UploadSource, size: int | None
) -> tuple[Callable[[], AsyncIterable[bytes]], int | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)

        async def from_bytes() -> AsyncIterator[bytes]:
            for i in range(0, len(data), CHUNK):
                yield data[i : i + CHUNK]

        return from_bytes, len(data) if size is None else size
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            actual = path.stat().st_size
        except OSError as e:
            raise InvalidInput(f"upload source {path}: {e.strerror}") from None
        want = actual if size is None else size

        return _FileSource(path, want), want
    if callable(source):
        return source, size
    raise InvalidInput(f"unsupported upload source {type(source).__name__}")


# ----------------------------------------------------------------------------------------------
# The client


class AttachmentClient:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.stats = ClientStats()
        self._supports_range: bool | None = None
        self._rename_supported: bool | None = None
        self._clock_offset = 0.0  # instance clock minus ours, from Date headers
        self._quota_cuts: dict[str, float] = {}  # sys_id -> when its download was given up
        self._core = HttpCore(
            _settings(config),
            config.auth,
            stats=self.stats,
            logger=log,
            error_mapper=servicenow_error,
            on_response=self._learn_clock,
            # OAuth refreshes its token on a 401 but cannot resend a streamed body itself.
            resend_on_401=hasattr(config.auth, "invalidate"),
        )
        bind = getattr(config.auth, "bind", None)
        if callable(bind):
            bind(self._http)
        if hasattr(config.auth, "on_token_request"):
            config.auth.on_token_request = self._count_token_request  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"AttachmentClient({self.config.base_url!r})"

    # The core's connection pool and semaphore, under the names this class always had.
    @property
    def _http(self) -> httpx.AsyncClient:
        return self._core.http

    @_http.setter
    def _http(self, http: httpx.AsyncClient) -> None:
        self._core.http = http

    @property
    def _api(self) -> str:
        return self._core.base

    def _count_token_request(self) -> None:
        self.stats.requests["auth"] += 1

    async def aclose(self) -> None:
        await self._core.aclose()

    async def __aenter__(self) -> AttachmentClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    @property
    def supports_range(self) -> bool | None:
        """Whether `/file` honours Range (learnt from responses; None until tried)."""
        return self._supports_range

    @property
    def rename_supported(self) -> bool | None:
        return self._rename_supported

    # -- the one request path ---------------------------------------------------------------

    def _failed(self, err: SnfsError) -> SnfsError:
        """Count and log a failure that reaches the caller: exactly one line."""
        return self._core.failed(err)

    def _learn_clock(self, resp: httpx.Response) -> None:
        date = resp.headers.get("date")
        if date:
            try:
                self._clock_offset = (
                    email.utils.parsedate_to_datetime(date).timestamp() - time.time()
                )
            except (TypeError, ValueError):
                pass

    async def _send(
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
        ctx: SendState | None = None,
        attempts: int | None = None,
        log_failure: bool = True,
    ) -> httpx.Response:
        """Send one logical request (with retries); return the response, body read.

        Raises the mapped `SnfsError` unless the status is 2xx or in `allow`. For a
        non-idempotent request only what provably did not reach the instance is retried
        (connect errors, 429, 503); other doubtful failures are raised with `in_doubt = True`.
        """
        return await self._core.send(
            kind,
            method,
            path,
            params=params,
            json=json,
            body=body,
            headers=headers,
            idempotent=idempotent,
            allow=allow,
            attempts=attempts,
            log_failure=log_failure,
            state=ctx,
        )

    # -- operations -------------------------------------------------------------------------

    async def check(self) -> None:
        """One cheap authenticated request: raises AuthError, ConnectionFailed, ... if the
        instance cannot be used."""
        # The caller reports a failure here in its own words: no second log line. The answer
        # must be the API's JSON: a hibernating developer instance or a login page answers
        # 200 with HTML (NotAnApi, not retried, so `snfs mount` ends at once).
        resp = await self._send(
            "list",
            "GET",
            "/attachment",
            params={"sysparm_limit": "1", "sysparm_fields": "sys_id"},
            attempts=3,
            log_failure=False,
        )
        _result(resp, list)

    async def list_pages(
        self, query: str, *, page_size: int = 1000
    ) -> AsyncIterator[list[Attachment]]:
        """Attachments matching an encoded query, one page per yield, each attachment once.

        A real instance applies `sysparm_limit` before ACLs: a page may come back short or
        empty in the middle of a listing. So the end is what the instance says (`Link` without
        `next`, or `X-Total-Count`), never a short or empty page; only an answer with neither
        header ends at a page shorter than asked for.
        """
        if page_size < 1:
            raise InvalidInput("page_size must be positive")
        offset = 0
        seen: set[str] = set()
        while True:
            resp = await self._send(
                "list",
                "GET",
                "/attachment",
                params={
                    "sysparm_query": query,
                    "sysparm_limit": str(page_size),
                    "sysparm_offset": str(offset),
                },
            )
            rows = _result(resp, list)
            page = []
            for row in rows:
                att = Attachment.from_json(row)
                if att.sys_id and att.sys_id not in seen:
                    seen.add(att.sys_id)
                    page.append(att)
            if page:
                yield page
            nxt = _next_offset(resp, offset, page_size, len(rows))
            if nxt is None:
                return
            offset = nxt

    async def list_rows(
        self,
        table: str,
        query: str,
        *,
        offset: int,
        limit: int,
        fields: tuple[str, ...],
        count: bool,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of raw rows of `table` (`sys_attachment`: the Attachment API, else the
        Table API) with only `fields`; `count=False` sends `sysparm_no_count=true`.
        Returns the rows and X-Total-Count (None when absent). For `snfs.pager`."""
        _q.validate_table(table)
        params = {
            "sysparm_query": query,
            "sysparm_limit": str(limit),
            "sysparm_offset": str(offset),
            "sysparm_fields": ",".join(_q.validate_field(f) for f in fields),
            "sysparm_suppress_pagination_header": "true",
        }
        if not count:
            params["sysparm_no_count"] = "true"
        attachments = table == "sys_attachment"
        path = "/attachment" if attachments else f"/table/{_base_table(table)}"
        resp = await self._send("list" if attachments else "table", "GET", path, params=params)
        rows = [r for r in _result(resp, list) if isinstance(r, dict)]
        try:
            total: int | None = int(resp.headers["x-total-count"])
        except (KeyError, ValueError):
            total = None
        return rows, total

    async def list_all(self, query: str, *, page_size: int = 1000) -> list[Attachment]:
        out: list[Attachment] = []
        async for page in self.list_pages(query, page_size=page_size):
            out.extend(page)
        return out

    async def get(self, sys_id: str) -> Attachment:
        _q.validate_sys_id(sys_id)
        resp = await self._send("get", "GET", f"/attachment/{sys_id}")
        return Attachment.from_json(_result(resp, dict))

    def stream(
        self,
        sys_id: str,
        *,
        offset: int = 0,
        expected_size: int | None = None,
        like: RemoteFile | None = None,
    ) -> AsyncIterator[bytes]:
        """The content from `offset` on, resumed across broken connections. `like`: the
        file's metadata, when known, to ask for gzip only where it pays."""
        _q.validate_sys_id(sys_id)
        if offset < 0:
            raise InvalidInput("offset must not be negative")
        return self._stream(sys_id, offset, expected_size, hold_slot=True, like=like)

    def stream_media(
        self, media_url: str, *, offset: int = 0, expected_size: int | None = None
    ) -> AsyncIterator[bytes]:
        """The content of a CCCIF `mediaUrl` (the CCCIF answer's link to the stored file),
        readable by its uploader where the attachment's ACL hides it from the Attachment API.
        Only a URL of this instance's API: the credentials never go to another host."""
        base = self._core.base + "/"
        if not media_url.startswith(base) or offset < 0:
            raise InvalidInput(f"not a media URL of this instance: {media_url!r}")
        path = "/" + media_url[len(base) :]
        return self._core.stream("file", path, offset=offset, expected_size=expected_size)

    async def stream_into(
        self, sys_id: str, sink: Sink, *, offset: int = 0, like: RemoteFile | None = None
    ) -> None:
        """`stream`, with the bytes received, verified and put into `sink` by a worker
        thread (`HttpCore.stream_into`)."""
        _q.validate_sys_id(sys_id)
        if offset < 0:
            raise InvalidInput("offset must not be negative")
        path = self._not_cut(sys_id)
        try:
            await self._core.stream_into(
                "file", path, sink, offset=offset, fetch=_AttachmentFetch(self, sys_id, like)
            )
        except QuotaCut:
            self._quota_cuts[sys_id] = time.monotonic()
            raise
        self._quota_cuts.pop(sys_id, None)

    def _not_cut(self, sys_id: str) -> str:
        """The file's path, unless the quota cut its download moments ago."""
        path = f"/attachment/{sys_id}/file"
        cut_at = self._quota_cuts.get(sys_id)
        if cut_at is not None and time.monotonic() - cut_at < QUOTA_MEMORY:
            # It was just cut by the quota again and again (and said so in the log): asking
            # once more at once (the kernel's read-ahead does) would only repeat that.
            raise QuotaCut(
                f"GET {path}: cut by the instance's transaction quota less than "
                f"{QUOTA_MEMORY:.0f} s ago",
                instance_message="transaction quota",
                method="GET",
                path=path,
            )
        return path

    async def _stream(
        self,
        sys_id: str,
        offset: int,
        expected_size: int | None,
        hold_slot: bool,
        like: RemoteFile | None = None,
    ) -> AsyncIterator[bytes]:
        path = self._not_cut(sys_id)
        # A copy stream (hold_slot False) feeds an upload that holds a session itself.
        chunks = self._core.stream(
            "file",
            path,
            offset=offset,
            expected_size=expected_size,
            fetch=_AttachmentFetch(self, sys_id, like),
            spare=not hold_slot,
        )
        try:
            async with aclosing(chunks):  # closed with us: its session is freed at once
                async for chunk in chunks:
                    yield chunk
        except QuotaCut:
            self._quota_cuts[sys_id] = time.monotonic()
            raise
        self._quota_cuts.pop(sys_id, None)

    def _range_start(
        self, resp: httpx.Response, path: str, pos: int, ranged: bool
    ) -> tuple[Skip, int | None]:
        """What to skip of a 200/206 answer for content from `pos` on, and the whole size a
        206 names; learns whether the instance honours Range."""
        if resp.status_code != 206:
            if ranged:
                self._supports_range = False
            return Skip(pos), None
        start, whole = _content_range(resp.headers.get("content-range"))
        if start != pos:
            raise ServerError(
                f"GET {path}: 206 for the wrong range", status=206, method="GET", path=path
            )
        self._supports_range = True
        return Skip(0), whole

    async def upload(
        self,
        table: str,
        table_sys_id: str,
        file_name: str,
        source: UploadSource,
        *,
        size: int | None = None,
        content_type: str | None = None,
        multipart: bool = False,
        replaces: Collection[str] = (),
    ) -> Attachment:
        """Store a new attachment; streamed, never held in memory.

        Stored means: the answer names a valid sys_id that is none of `replaces` (the
        attachments this one is to replace, deleted by the caller only after this returns).

        Retried only when the instance provably did not act (connect errors, 429, 503). When in
        doubt (timeout or connection lost after sending, 502/504) the attachment is looked for
        (same record, name, size and SHA-256, created since the upload began) before sending again.
        """
        _q.validate_table(table)
        _q.validate_sys_id(table_sys_id)
        validate_file_name(file_name)
        if size is not None and size < 0:
            raise InvalidInput("size must not be negative")
        ctype = content_type or mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        opener, size = _opener(source, size)
        headers: dict[str, str]
        if multipart:
            boundary = "snfs-" + _secrets.token_hex(16)
            fields = [
                ("table_name", table),
                ("table_sys_id", table_sys_id),
                ("file_name", file_name),
            ]
            head, tail = _multipart_frame(boundary, fields, "uploadFile", file_name, ctype)
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            path, params = "/attachment/upload", None
        else:
            head = tail = b""
            headers = {"Content-Type": ctype}
            path = "/attachment/file"
            params = {"table_name": table, "table_sys_id": table_sys_id, "file_name": file_name}
        bodies, make_body = self._bodies(opener, size, head, tail, headers)

        since = time.time() + self._clock_offset

        async def send() -> Attachment:
            resp = await self._send(
                "upload",
                "POST",
                path,
                params=params,
                body=make_body,
                headers=headers,
                idempotent=False,
                log_failure=False,
            )
            att = _stored(resp, path, replaces)
            log.debug("uploaded %s/%s/%s as %s", table, table_sys_id, file_name, att.sys_id)
            return att

        async def look(last: _Body) -> Attachment | None:
            found = await self._find_uploaded(
                table, table_sys_id, file_name, last.sent, last.digest.hexdigest(), since
            )
            return found if found is not None and found.sys_id not in replaces else None

        what = f"{table}/{table_sys_id}/{file_name}"
        return await upload_once(self._core, send, bodies, what, look)

    def _bodies(
        self,
        opener: Callable[[], AsyncIterable[bytes]],
        size: int | None,
        head: bytes,
        tail: bytes,
        headers: dict[str, str],
    ) -> tuple[list[_Body], Callable[[], AsyncIterable[bytes]]]:
        """An upload's body, made anew for each attempt (a retry reads the source again): the
        bodies made so far (the last says what was sent, and its hash) and their maker. Sets
        `Content-Length` in `headers` when the size is known."""
        if size is not None:
            headers["Content-Length"] = str(len(head) + size + len(tail))
        bodies: list[_Body] = []

        def make_body() -> AsyncIterable[bytes]:
            b = _Body(self, opener, size, head, tail)
            bodies.append(b)
            return b.__aiter__()

        return bodies, make_body

    async def _find_uploaded(
        self, table: str, table_sys_id: str, file_name: str, size: int, digest: str, since: float
    ) -> Attachment | None:
        """Poll for an attachment an in-doubt upload may have created, for `in_doubt_wait`."""
        q = _q.all_of(
            _q.term("table_name", "=", table),
            _q.term("table_sys_id", "=", table_sys_id),
            _q.term("file_name", "=", file_name),
            _q.order_by("sys_created_on", desc=True),
        )
        wait_total = self.config.in_doubt_wait
        if wait_total is None:
            wait_total = max(self.config.timeout, 5.0)
        give_up = time.monotonic() + wait_total
        pause = 0.25
        failure: SnfsError | None = None
        while True:
            try:
                atts = await self.list_all(q, page_size=100)
                failure = None
            except SnfsError as err:
                atts, failure = [], err
            hits = [
                a
                for a in atts
                if a.size_bytes == size
                and (not a.hash or a.hash == digest)
                and a.created_on.timestamp() >= int(since) - 2
            ]
            if hits:
                return max(hits, key=lambda a: (a.created_on, a.sys_id))
            if time.monotonic() + pause > give_up:
                if failure is not None:
                    # The last look-up got no answer: "not found" is not known, and sending
                    # again on that guess may store a second copy (issue 18, row 6). The
                    # attempt stays in doubt; the caller looks again before its next upload.
                    failure.in_doubt = True
                    raise failure
                return None
            await trio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def cccif_upload(
        self,
        user_id: str,
        file_name: str,
        source: UploadSource,
        *,
        size: int | None = None,
        content_type: str | None = None,
        provider_application_id: str | None = None,
    ) -> Attachment:
        """CCCIF Media Resource API (`POST /cccif/media/upload`): a chat user's private file.

        Multipart with `user_id` (and `provider_application_id`) first, the `file` part last,
        streamed. Retried only where the instance provably did not act: the API offers no way
        to look for an upload in doubt. The documented 201 answer is the proof of storage: its
        `attachmentId` is the new attachment (no read-back, which the attachment's ACL may deny
        to the uploader); size, type and SHA-256 are those of what was sent, and the answer is
        kept in `extra` (`media_url`, `attachment_id`, `state`).
        """
        validate_file_name(file_name)
        if not user_id or "\0" in user_id:
            raise InvalidInput(f"invalid CCCIF user_id {user_id!r}")
        if provider_application_id is not None:
            _q.validate_sys_id(provider_application_id)
        ctype = content_type or mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        opener, size = _opener(source, size)
        boundary = "snfs-" + _secrets.token_hex(16)
        fields = [("user_id", user_id)]
        if provider_application_id:
            fields.append(("provider_application_id", provider_application_id))
        head, tail = _multipart_frame(boundary, fields, "file", file_name, ctype)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Accept": "application/json",
        }
        bodies, make_body = self._bodies(opener, size, head, tail, headers)

        path = "/cccif/media/upload"
        resp = await self._send(
            "upload", "POST", path, body=make_body, headers=headers, idempotent=False
        )
        answer = _result(resp, dict)
        sys_id = _str(answer.get("attachmentId"))
        if resp.status_code not in (200, 201) or not _q.is_sys_id(sys_id):
            err = ServerError(
                f"POST {path}: {resp.status_code} without a valid attachmentId ({sys_id!r})",
                status=resp.status_code,
                method="POST",
                path=path,
            )
            err.in_doubt = True
            raise self._failed(err)
        now = datetime.now(UTC)
        state = _str(answer.get("state"))
        return Attachment(
            sys_id=sys_id,
            table_name="",  # the instance does not say which record it filed the media under
            table_sys_id="",
            file_name=_str(answer.get("name")) or file_name,
            size_bytes=bodies[-1].sent,
            content_type=ctype,
            created_on=now,
            updated_on=now,
            created_by="",
            hash=bodies[-1].digest.hexdigest(),
            download_link=f"{self.config.base_url}/api/now/attachment/{sys_id}/file",
            state=state,
            extra={
                "media_url": _str(answer.get("mediaUrl")),
                "attachment_id": sys_id,
                "state": state,
            },
        )

    async def delete(self, sys_id: str, *, missing_ok: bool = False) -> None:
        _q.validate_sys_id(sys_id)
        ctx = SendState()
        path = f"/attachment/{sys_id}"
        resp = await self._send("delete", "DELETE", path, allow=(404,), ctx=ctx)
        if resp.status_code == 404 and not missing_ok and not ctx.lost_response:
            raise self._failed(http_error(resp, "delete", "DELETE", path))

    async def rename(self, sys_id: str, new_name: str) -> Attachment:
        """PATCH the file name. Where the instance cannot (405, or 404/400 for an attachment
        that exists), raise Unsupported: the file system core then renames by a journaled
        copy-then-delete that it owns (docs/WRITES.md), never this client on its own."""
        _q.validate_sys_id(sys_id)
        validate_file_name(new_name)
        path = f"/attachment/{sys_id}"
        if self._rename_supported is False:
            raise Unsupported(f"PATCH {path}: rename is not offered by this instance")
        resp = await self._send(
            "rename", "PATCH", path, json={"file_name": new_name}, allow=(400, 404, 405)
        )
        if resp.is_success:
            self._rename_supported = True
            try:
                row = _result(resp, dict)
                if row.get("sys_id"):
                    return Attachment.from_json(row)
            except SnfsError:
                pass
            return await self.get(sys_id)
        err = http_error(resp, "rename", "PATCH", path)
        if resp.status_code == 404 or resp.status_code == 400:
            await self.get(sys_id)  # NotFound when the attachment itself is missing
        if resp.status_code in (404, 405):
            self._rename_supported = False
        log.info("rename by PATCH not available (%s)", err.message)
        raise Unsupported(f"PATCH {path}: rename not available ({err.message})")

    async def count_by(
        self, group_by: str, query: str = "", *, table: str = "sys_attachment"
    ) -> dict[str, int]:
        """Aggregate API: number of `table` records per value of `group_by`."""
        _q.validate_field(group_by)
        _q.validate_table(table)
        params = {"sysparm_count": "true", "sysparm_group_by": group_by}
        if query:
            params["sysparm_query"] = query
        resp = await self._send("stats", "GET", f"/stats/{table}", params=params)
        result = _result(resp, (list, dict))
        counts: dict[str, int] = {}
        rows = result if isinstance(result, list) else [result]
        for row in rows:
            if not isinstance(row, dict):
                continue
            stats = row.get("stats") or {}
            n = _int(stats.get("count") if isinstance(stats, dict) else 0)
            value = ""
            for g in row.get("groupby_fields") or []:
                if isinstance(g, dict) and g.get("field") == group_by:
                    value = _str(g.get("value"))
            counts[value] = counts.get(value, 0) + n
        return counts

    async def recent_tables(self, limit: int = 1000) -> set[str]:
        """The table names of the `limit` most recent attachments the user can read."""
        resp = await self._send(
            "list",
            "GET",
            "/attachment",
            params={
                "sysparm_query": _q.order_by("sys_created_on", desc=True),
                "sysparm_fields": "table_name",
                "sysparm_limit": str(limit),
            },
        )
        return {_str(r.get("table_name")) for r in _result(resp, list) if isinstance(r, dict)}

    async def record_exists(self, table: str, sys_id: str) -> bool:
        _q.validate_table(table)
        if not _q.is_sys_id(sys_id):
            return False
        resp = await self._send(
            "table",
            "GET",
            f"/table/{_base_table(table)}/{sys_id}",
            params={"sysparm_fields": "sys_id"},
            allow=(400, 404),
        )
        return resp.is_success

    async def table_exists(self, table: str) -> bool:
        """Whether the Table API knows `table` (a `ZZ_YY<table>` exists when `<table>` does)."""
        _q.validate_table(table)
        resp = await self._send(
            "table",
            "GET",
            f"/table/{_base_table(table)}",
            params={"sysparm_limit": "1", "sysparm_fields": "sys_id"},
            allow=(400, 404),
        )
        return resp.is_success

    async def find_record(self, table: str, number: str) -> str | None:
        """The sys_id of the record of `table` with this number (INC0010001), or None."""
        _q.validate_table(table)
        if not isinstance(number, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", number):
            raise InvalidInput(f"invalid record number {number!r}")
        resp = await self._send(
            "table",
            "GET",
            f"/table/{_base_table(table)}",
            params={
                "sysparm_query": _q.term("number", "=", number),
                "sysparm_fields": "sys_id,number",
                "sysparm_limit": "1",
            },
            allow=(400, 404),
        )
        if not resp.is_success:
            return None
        for row in _result(resp, list):
            sid = _str(row.get("sys_id")) if isinstance(row, dict) else ""
            if _q.is_sys_id(sid) and _str(row.get("number")) in ("", number):
                return sid
        return None


# ----------------------------------------------------------------------------------------------
# small helpers used above


def _stored(resp: httpx.Response, path: str, replaces: Collection[str]) -> Attachment:
    """The attachment an upload's answer names; an answer without a valid new sys_id leaves
    the upload in doubt (it may be stored, under a name we do not know): never a success."""
    try:
        att = Attachment.from_json(_result(resp, dict))
    except ServerError as bad:
        bad.in_doubt = True
        raise
    if not _q.is_sys_id(att.sys_id) or att.sys_id in replaces:
        err = ServerError(
            f"POST {path}: {resp.status_code} without a valid new sys_id ({att.sys_id!r})",
            status=resp.status_code,
            method="POST",
            path=path,
        )
        err.in_doubt = True
        raise err
    return att


def _base_table(table: str) -> str:
    return table[5:] if table.startswith("ZZ_YY") else table


def _result(resp: httpx.Response, kind: type | tuple[type, ...]) -> Any:
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, kind):
        path = urlsplit(str(resp.request.url)).path if resp.request else ""
        raise ServerError(
            f"{resp.request.method if resp.request else ''} {path}: "
            f"{resp.status_code} answer without a usable result",
            status=resp.status_code,
        )
    return result


def _next_offset(resp: httpx.Response, offset: int, page_size: int, rows: int) -> int | None:
    """Where the next page starts, or None when the instance says the listing is done.

    A short or empty page never ends a listing that `Link` or `X-Total-Count` says goes on:
    ACLs drop rows after `sysparm_limit`. A real instance sends `Link` whenever there is more
    than one page, and its `next` steps by the limit. Without `Link`, a server may have capped
    the page below what was asked for: step by the rows it gave (by the limit after an empty
    page, which cannot be a cap), so no row is ever skipped.
    """
    links = _parse_link(resp.headers.get("link"))
    if "next" in links:
        nxt = _offset_of(links["next"])
        return nxt if nxt is not None and nxt > offset else offset + page_size
    if links:
        return None  # Link without next: the last page
    try:
        total: int | None = int(resp.headers["x-total-count"])
    except (KeyError, ValueError):
        total = None
    following = offset + (rows or page_size)
    if total is not None:
        return following if following < total else None
    return following if rows >= page_size else None


def _metadata(resp: httpx.Response) -> dict[str, Any] | None:
    raw = resp.headers.get("x-attachment-metadata")
    if not raw:
        return None
    try:
        meta = _json.loads(raw)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


class _AttachmentFetch(Fetch):
    """`/attachment/{sys_id}/file` for `HttpCore.stream`: gzip where it pays (text-like
    content, `snfs.compressible`; without the file's metadata, as always), Range from an
    offset unless the instance has shown it ignores Range, 416 at the end, and the answer
    checked against `X-Attachment-Metadata` (`_Check`)."""

    verb = "resuming"

    def __init__(self, client: AttachmentClient, sys_id: str, like: RemoteFile | None) -> None:
        self.client, self.sys_id, self.what = client, sys_id, sys_id
        self.ranged = False
        self.gzip = (
            like is None
            or client.config.gzip_always
            or gzip_pays(like.content_type, like.file_name)
        )

    def headers(self, pos: int) -> dict[str, str]:
        self.ranged = pos > 0 and self.client.supports_range is not False
        if self.ranged:  # a range of the plain bytes
            return {"Accept": "*/*", "Accept-Encoding": "identity", "Range": f"bytes={pos}-"}
        return {"Accept": "*/*", "Accept-Encoding": "gzip" if self.gzip else "identity"}

    async def answer(
        self, core: HttpCore, resp: httpx.Response, pos: int, kind: str, path: str
    ) -> Answer | None:
        if resp.status_code == 416:
            return None  # offset at or past the end
        if resp.status_code not in (200, 206):
            raise await core.read_error(resp, kind, path)
        page = await resp.aread() if _Check.page_like(resp) else None
        check = _Check.of(resp, self.sys_id, path, page)
        skip, whole = self.client._range_start(resp, path, pos, self.ranged)
        total = check.size if check.size is not None else whole
        # As the bytes arrive: re-chunking them costs a copy per byte, and the content cache
        # gathers its disk writes itself.
        return Answer(skip, total, check.body(resp), check.verify)

    def answer_in_worker(
        self, core: HttpCore, resp: httpx.Response, pos: int, kind: str, path: str
    ) -> WorkerAnswer | None:
        if resp.status_code == 416:
            return None
        if resp.status_code not in (200, 206):
            resp.read()
            raise core.refused_download(resp, kind, path)
        check = _Check.of(resp, self.sys_id, path, resp.read() if _Check.page_like(resp) else None)
        skip, whole = self.client._range_start(resp, path, pos, self.ranged)
        total = check.size if check.size is not None else whole
        receive = wire.readinto(resp)
        if receive is None:
            return WorkerAnswer(skip, total, check.body_in_worker(resp), check.verify)
        check.start(resp)  # the worker receives into its blocks and hands them to the check
        return WorkerAnswer(skip, total, iter(()), check.verify, receive, check.absorb)

    def after(self, resp: httpx.Response) -> None:
        self.client._learn_clock(resp)


class _Check:
    """What a `/file` answer must be: the attachment asked for (`X-Attachment-Metadata`), of
    its `size_bytes`, with its SHA-256 `hash` when the instance gives one and the whole body
    came (a 200, even when resuming: without Range the body starts at byte 0 again)."""

    def __init__(self, path: str, size: int | None, sha256: str, whole: bool) -> None:
        self.path, self.size = path, size
        self.digest = hashlib.sha256() if sha256 and whole else None
        self.sha256 = sha256.lower()
        self.received = 0  # bytes of this answer's body
        self.whole = False  # the body is the whole file (200, not 206)

    @staticmethod
    def page_like(resp: httpx.Response) -> bool:
        """A JSON answer without metadata: its body is read to tell which page it is."""
        ctype = resp.headers.get("content-type", "").lower()
        return _metadata(resp) is None and "json" in ctype

    @classmethod
    def of(cls, resp: httpx.Response, sys_id: str, path: str, page: bytes | None) -> _Check:
        """The check of an answer; `page`: its body when `page_like`."""
        meta = _metadata(resp)
        ctype = resp.headers.get("content-type", "").lower()
        if meta is None and ("html" in ctype or "json" in ctype):
            # No metadata and a page's type: a hibernating instance, a login page or an
            # error page answered 200 instead of the attachment. Name it; keep nothing.
            head = (page or b"")[:200] if "json" in ctype else b""
            what = HTML_PAGE if is_html(resp, head) or "html" in ctype else "a JSON page"
            raise NotTheContent(
                f"GET {path}: {resp.status_code} is not the attachment: {what}",
                status=resp.status_code,
                instance_message=f"not the attachment: {what}",
                method="GET",
                path=path,
            )
        if meta is None:
            return cls(path, None, "", False)
        if _str(meta.get("sys_id")) not in ("", sys_id):
            raise NotTheContent(
                f"GET {path}: the answer is attachment {_str(meta.get('sys_id'))}, not {sys_id}",
                method="GET",
                path=path,
            )
        size = _int(meta.get("size_bytes")) if _str(meta.get("size_bytes")) else None
        sha = _str(meta.get("hash"))
        return cls(path, size, sha if re.fullmatch(r"[0-9a-fA-F]{64}", sha) else "", True)

    def start(self, resp: httpx.Response) -> None:
        """Before the body: only a whole body (200, not 206) is hashed."""
        self.whole = resp.status_code == 200
        if not self.whole:
            self.digest = None

    def absorb(self, piece: bytes | memoryview) -> None:
        """The body's next bytes."""
        self.received += len(piece)
        if self.digest is not None:
            self.digest.update(piece)

    async def body(self, resp: httpx.Response) -> AsyncIterator[bytes]:
        self.start(resp)
        async for chunk in resp.aiter_bytes():
            self.absorb(chunk)
            yield chunk

    def body_in_worker(self, resp: httpx.Response) -> Iterator[bytes]:
        """`body` in a download's worker thread: receive and hash leave the event loop."""
        self.start(resp)
        for chunk in resp.iter_bytes():
            self.absorb(chunk)
            yield chunk

    def verify(self, total: int | None) -> None:
        """After a whole body (200): longer than the attachment, or another SHA-256 than its
        `hash`, is not it (shorter is a broken transfer, resumed by the caller)."""
        size = self.size if self.size is not None else total
        if not self.whole or size is None:
            return
        if self.received > size:
            raise self._wrong(f"{self.received} bytes, the attachment has {size}")
        if self.digest is not None and self.received == size:
            got = self.digest.hexdigest()
            if got != self.sha256:
                raise self._wrong(
                    f"SHA-256 {got[:12]}..., the attachment's hash {self.sha256[:12]}..."
                )

    def _wrong(self, what: str) -> NotTheContent:
        return NotTheContent(
            f"GET {self.path}: the content is not the attachment's: {what}",
            instance_message="content mismatch",
            method="GET",
            path=self.path,
        )


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)
