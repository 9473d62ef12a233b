"""Shared pieces of the non-ServiceNow emulators (`snfs emulator --kind easyvista|huawei`).

They reuse the ServiceNow emulator's machinery where it fits: `EmulatorMiddleware` (request
counting, fault injection; with the system's own error body for injected statuses),
`FaultQueue`, `BlobStore`/`BlobWriter` (streamed to disk while hashing), `download.FileStream`
and the `/__emulator__/` test controls of `api_control` (Basic `admin:admin`). What differs
is here: per-system route templates for `/__emulator__/stats`, a streaming multipart parser
that knows which parts are files, and a body reader with a size cap; and what both kinds
share: their SQLite store and emulator plumbing (`SqliteStore`, `KindEmulator`), response
headers (`http_date`, `disposition`) and the Starlette app around their routes (`kind_app`).
"""

from __future__ import annotations

import email.utils
import json
import re
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from snfs.emulator import api_control as ctl
from snfs.emulator.auth import Auth
from snfs.emulator.blobs import BlobStore, BlobWriter
from snfs.emulator.common import ApiError
from snfs.emulator.faults import FaultQueue
from snfs.emulator.middleware import EmulatorMiddleware
from snfs.emulator.stats import METHODS, Stats

JSON_TYPE = "application/json;charset=UTF-8"
ID = r"[^/]+"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(raw, status, headers, media_type=JSON_TYPE)


class HttpError(Exception):
    """An error answered with a system-specific JSON body."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(str(body))
        self.status, self.body, self.headers = status, body, headers or {}


def request_base(request: Request) -> str:
    """scheme://host[:port] as the client addressed this server (for links in answers)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def disposition(name: str) -> str:
    """An attachment Content-Disposition: an ASCII `filename` and the exact UTF-8 `filename*`."""
    ascii_name = (
        "".join(c if 32 <= ord(c) < 127 else "_" for c in name)
        .replace("\\", "\\\\")
        .replace('"', '\\"')
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


# -- state ---------------------------------------------------------------------------------------


class SqliteStore:
    """A kind's SQLite database in WAL mode, created with its schema (one connection for the
    server's threads)."""

    def __init__(self, path: Path, schema: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(schema)

    def close(self) -> None:
        self.conn.close()


class KindEmulator:
    """What a kind's emulator holds: config (with `data_dir`), store (`<kind>.sqlite3`), blob
    store, the users of `auth`, fault queue and route stats (what `EmulatorMiddleware` and the
    test controls use)."""

    kind: ClassVar[str]

    def __init__(
        self,
        config: Any,
        store: Callable[[Path], Any],
        auth: Auth,
        routes: list[RouteSpec],
        prefix: re.Pattern[str],
    ) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = store(config.data_dir / f"{self.kind}.sqlite3")
        self.blobs = BlobStore(config.data_dir / "blobs")
        self.auth = auth
        self.faults = FaultQueue()
        self.stats = RouteStats(routes, prefix)

    def wipe(self) -> None:
        self.store.wipe()
        self.blobs.wipe()


# -- the app -------------------------------------------------------------------------------------


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return json_response(exc.body, exc.status, exc.headers)


Handler = Callable[[Request, Exception], Any]


def kind_app(
    emu: KindEmulator,
    routes: list[Route],
    api_error: Handler,
    server_error: Handler,
    fault_body: Callable[[int], bytes],
) -> Any:
    """The ASGI app of a kind: its routes, `HttpError`s answered as they are, the test
    controls' `ApiError` and any other exception in the kind's own error shape, and the
    counting / fault-injecting middleware."""
    app = Starlette(
        routes=routes,
        exception_handlers={HttpError: http_error, ApiError: api_error, Exception: server_error},
    )
    app.state.emu = emu
    return EmulatorMiddleware(app, emu, fault_body)  # type: ignore[arg-type]


# -- stats ---------------------------------------------------------------------------------------

RouteSpec = tuple[str, str, "re.Pattern[str]"]


def compile_routes(specs: list[tuple[str, str, str]]) -> list[RouteSpec]:
    """(method, template, regex) → (method, "METHOD template", compiled ^regex$)."""
    return [(m, f"{m} {t}", re.compile("^" + p + "$")) for m, t, p in specs]


class RouteStats(Stats):
    """`Stats` with another system's route templates (keys like `GET /requests/{rfc_number}`)."""

    def __init__(self, routes: list[RouteSpec], prefix: re.Pattern[str]) -> None:
        self.routes, self.prefix = routes, prefix
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.by_method = Counter({m: 0 for m in METHODS})
        self.by_route = Counter({key: 0 for _, key, _ in self.routes})

    def key(self, method: str, path: str) -> str | None:
        m = self.prefix.match(path)
        if not m:
            return None
        rel = path[m.end() :]
        method = "GET" if method == "HEAD" else method
        for route_method, key, pattern in self.routes:
            if route_method == method and pattern.match(rel):
                return key
        return None

    def known(self, path: str) -> bool:
        m = self.prefix.match(path)
        if m is None:
            return False
        return any(p.match(path[m.end() :]) for _, _, p in self.routes)

    def count(self, method: str, path: str) -> None:
        self.total += 1
        self.by_method[method] += 1
        key = self.key(method, path)
        if key:
            self.by_route[key] += 1


def control_routes() -> list[Route]:
    """The ServiceNow emulator's test controls, unchanged (they need Basic admin:admin)."""
    return [
        Route("/__emulator__/stats", ctl.get_stats, methods=["GET"]),
        Route("/__emulator__/faults", ctl.add_fault, methods=["POST"]),
        Route("/__emulator__/faults", ctl.clear_faults, methods=["DELETE"]),
        Route("/__emulator__/reset", ctl.reset, methods=["POST"]),
    ]


# -- bodies --------------------------------------------------------------------------------------


async def drain(request: Request) -> None:
    async for _ in request.stream():
        pass


async def read_capped(request: Request, limit: int, too_large: Callable[[], HttpError]) -> bytes:
    """The whole body, or `too_large()` (after draining) when it is over `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await drain(request)
        raise too_large()
    buf = bytearray()
    over = False
    async for chunk in request.stream():
        if over:
            continue
        buf += chunk
        if len(buf) > limit:
            over = True
            buf = bytearray()
    if over:
        raise too_large()
    return bytes(buf)


@dataclass
class FilePart:
    name: str
    file_name: str | None
    content_type: str
    writer: BlobWriter


@dataclass
class StreamingForm:
    """python-multipart callbacks: text fields in memory (capped), file parts to disk.

    A part is a file when it has a `filename` or its name is in `file_fields`; every file part
    gets its own `BlobWriter` (so `files` may hold several).
    """

    blobs: BlobStore
    file_fields: frozenset[str] = frozenset()
    max_file: int | None = None
    max_field: int = 64 * 1024
    fields: dict[str, str] = field(default_factory=dict)
    field_overflow: set[str] = field(default_factory=set)
    files: list[FilePart] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._headers: dict[str, str] = {}
        self._hname, self._hvalue = b"", b""
        self._data = bytearray()
        self._part_name = ""
        self._file: FilePart | None = None

    def parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._hfield,
                "on_header_value": self._hval,
                "on_header_end": self._hend,
                "on_headers_finished": self._headers_done,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def _begin(self) -> None:
        self._headers, self._data, self._file = {}, bytearray(), None

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _hval(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _hend(self) -> None:
        self._headers[self._hname.decode("latin-1").lower()] = self._hvalue.decode("latin-1")
        self._hname, self._hvalue = b"", b""

    def _headers_done(self) -> None:
        _, opts = parse_options_header(self._headers.get("content-disposition", ""))
        self._part_name = opts.get(b"name", b"").decode("utf-8", "replace")
        filename = opts.get(b"filename")
        if filename is not None or self._part_name in self.file_fields:
            self._file = FilePart(
                self._part_name,
                filename.decode("utf-8", "replace") if filename is not None else None,
                self._headers.get("content-type", ""),
                self.blobs.writer(self.max_file),
            )
            self.files.append(self._file)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.writer.write(data[start:end])
        elif len(self._data) + (end - start) <= self.max_field:
            self._data += data[start:end]
        else:
            self.field_overflow.add(self._part_name)

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.writer.close()
        elif self._part_name:
            self.fields[self._part_name] = self._data.decode("utf-8", "replace")

    def abort(self) -> None:
        for f in self.files:
            f.writer.abort()


async def parse_multipart(request: Request, form: StreamingForm) -> None:
    """Feed the request body to `form`; ValueError when it is not multipart or malformed
    (the body is always read to the end, so the client gets the answer)."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    boundary = opts.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        await drain(request)
        raise ValueError("Content-Type must be multipart/form-data with a boundary")
    parser = form.parser(boundary)
    failure: ValueError | None = None
    async for chunk in request.stream():  # on a parse error, still read the body to the end
        if failure is None:
            try:
                parser.write(chunk)
            except ValueError as exc:
                failure = exc
    if failure is not None:
        raise failure
    parser.finalize()


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")
