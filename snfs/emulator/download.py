"""GET /attachment/{sys_id}/file: the hot path. Streams from disk in large chunks.

Like a real instance: chunked, gzip when the client accepts it, no Range. With --range:
`Accept-Ranges: bytes`, one `bytes=a-b` / `a-` / `-n` range → 206 (identity, so offsets are byte
offsets), unsatisfiable → 416; several ranges are ignored (200 with the whole file).
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio
from starlette.requests import Request

from snfs.emulator.common import ApiError
from snfs.emulator.middleware import DropConnection
from snfs.emulator.state import Config

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")


def content_type_header(content_type: str) -> str:
    # Real capture: application/json is served as application/json;charset=UTF-8.
    if content_type.startswith(_TEXT_TYPES) and "charset" not in content_type:
        return content_type + ";charset=UTF-8"
    return content_type or "application/octet-stream"


def content_disposition(name: str) -> str:
    # The quoted form must stay latin-1 safe for HTTP; filename* carries the exact UTF-8 name.
    ascii_name = (
        "".join(c if 32 <= ord(c) < 127 else "_" for c in name)
        .replace("\\", "\\\\")
        .replace('"', '\\"')
    )
    return f"attachment;filename=\"{ascii_name}\";filename*=UTF-8''{quote(name, safe='')}"


def accepts_gzip(request: Request) -> bool:
    for item in request.headers.get("accept-encoding", "").lower().split(","):
        token, _, params = item.strip().partition(";")
        if token.strip() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """(start, length) for one satisfiable range; None to ignore the header; "unsatisfiable"."""
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), min(n, size)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end - start + 1


class FileStream:
    """A bare ASGI response: no buffering, one read and one send per chunk."""

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        path: Path,
        start: int,
        length: int,
        gzip_level: int | None,
        chunk_size: int,
        head_only: bool,
        rate: int = 0,
        quota: float = 0.0,
    ) -> None:
        self.status, self.path, self.start, self.length = status, path, start, length
        self.raw_headers = [
            (k.lower().encode("latin-1"), v.encode("utf-8")) for k, v in headers.items()
        ]
        self.gzip_level, self.chunk_size, self.head_only = gzip_level, chunk_size, head_only
        self.rate, self.quota = rate, quota
        if rate:  # small pieces, so the pace is even
            self.chunk_size = max(4096, min(chunk_size, rate // 10))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self.raw_headers}
        )
        if self.head_only:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        gz = (
            zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)
            if self.gzip_level is not None
            else None
        )
        started = trio.current_time()
        # A local file read in large pieces: each read is quick, a thread hop would cost more.
        with open(self.path, "rb", buffering=0) as f:  # noqa: ASYNC230
            if self.start:
                f.seek(self.start)
            remaining = self.length
            while remaining > 0:
                if self.quota and trio.current_time() - started > self.quota:
                    # The transaction quota cancels the transfer: the body just stops.
                    raise DropConnection()
                if self.rate:
                    await trio.sleep(min(self.chunk_size, remaining) / self.rate)
                chunk = f.read(min(self.chunk_size, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                if gz is not None:
                    # zlib releases the GIL: compress off the event loop so downloads overlap.
                    chunk = await trio.to_thread.run_sync(gz.compress, chunk)
                    if not chunk:
                        continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        tail = gz.flush() if gz is not None else b""
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def _incompressible(row: dict[str, str]) -> bool:
    try:
        return int(row["size_compressed"]) >= int(row["size_bytes"]) > 0
    except ValueError:
        return False


def file_response(
    request: Request, config: Config, row: dict[str, str], path: Path, meta: str
) -> FileStream:
    size = os.path.getsize(path)
    headers = {
        "Content-Type": content_type_header(row["content_type"]),
        "Content-Disposition": content_disposition(row["file_name"]),
        "X-Attachment-Metadata": meta,
    }
    head_only = request.method == "HEAD"
    start, length, status = 0, size, 200
    if config.range:
        headers["Accept-Ranges"] = "bytes"
        wanted = request.headers.get("range")
        rng = parse_range(wanted, size) if wanted else None
        if rng == "unsatisfiable":
            raise ApiError(
                416, "Requested range not satisfiable", None, {"Content-Range": f"bytes */{size}"}
            )
        if isinstance(rng, tuple):
            start, length = rng
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    gzip_level = (
        config.gzip_level if config.gzip and status == 200 and accepts_gzip(request) else None
    )
    if gzip_level is not None and _incompressible(row):
        gzip_level = 0  # still gzip on the wire, without burning CPU on random bytes
    if gzip_level is not None:
        headers["Content-Encoding"] = "gzip"
    elif config.range:
        headers["Content-Length"] = str(length)  # identity with --range: sized, like a file server
    return FileStream(
        status,
        headers,
        path,
        start,
        length,
        gzip_level,
        config.chunk_size,
        head_only,
        config.file_rate,
        config.quota,
    )
