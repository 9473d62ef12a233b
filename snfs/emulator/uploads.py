"""POST /attachment/file (raw body) and POST /attachment/upload (multipart), streamed to disk.

Failure statuses (Attachment API docs, POST /attachment/file): missing parameter or
Content-Type → 400; record missing → 404;
unknown table → 404 (--unknown-table-upload-status 400); over --max-size → 400
(--oversize-status); extension not in --extensions → 400 (--extension-status). On every early
failure the request body is still read and discarded, so the client sees the answer instead of
a reset connection.
"""

from __future__ import annotations

import mimetypes
import time
from typing import Any, cast

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import Response

from snfs.emulator.auth import User
from snfs.emulator.blobs import BlobWriter
from snfs.emulator.common import (
    ApiError,
    acl_denied,
    api_prefix,
    base_url,
    emu_of,
    not_found,
    present,
    render,
    require_user,
)
from snfs.emulator.db import new_sys_id, now_str
from snfs.emulator.rows import attachment_row
from snfs.emulator.state import Config, Emulator
from snfs.emulator.tables import TABLES, base_table, can_access

FORM_FIELDS = frozenset(
    {
        "table_name",
        "table_sys_id",
        "record_sys_id",
        "file_name",
        "encryption_context",
        "creation_time",
        "user_id",
        "provider_application_id",
    }
)  # the last two: CCCIF
MAX_FIELD_BYTES = 64 * 1024
OVERSIZE = "Attachment size exceeds the maximum allowed size"


async def drain(request: Request) -> None:
    async for _ in request.stream():
        pass


def missing(name: str) -> ApiError:
    return ApiError(400, f"Missing mandatory parameter: {name}", None)


def check_extension(config: Config, file_name: str) -> None:
    if not config.extensions:
        return
    ext = file_name.rsplit(".", 1)[1].lower() if "." in file_name else ""
    if ext not in config.extensions:
        raise ApiError(
            config.extension_status,
            f"File extension '{ext}' is not allowed",
            f"Allowed attachment extensions: {', '.join(sorted(config.extensions))}",
        )


def check_size(config: Config, size: int) -> None:
    limit = config.max_size_bytes
    if limit is not None and size > limit:
        raise ApiError(
            config.oversize_status,
            OVERSIZE,
            f"Maximum attachment size is {config.max_size_mb:g} MB",
        )


def check_target(emu: Emulator, user: User, table_name: str, table_sys_id: str) -> None:
    """The record an attachment goes to must exist and be writable by the user."""
    table = base_table(table_name)
    if table not in TABLES:
        if emu.config.unknown_table_upload_status == 400:
            raise ApiError(400, f"Invalid table {table_name}", None)
        raise ApiError(
            emu.config.unknown_table_upload_status,
            "Invalid table or record",
            "Record doesn't exist or ACL restricts the record retrieval",
        )
    if not can_access(user.roles, table):
        raise acl_denied(emu)
    if emu.store.get_record(table, table_sys_id) is None:
        raise not_found()


def store_upload(
    request: Request,
    emu: Emulator,
    user: User,
    writer: BlobWriter,
    table_name: str,
    table_sys_id: str,
    file_name: str,
    content_type: str,
) -> Response:
    writer.close()
    check_size(emu.config, writer.size)
    now = time.time()
    delay = emu.config.state_delay
    sys_id = new_sys_id()
    # `pending` at upload and `available` about a second later (responses recorded from a real
    # instance);
    # with --state-delay 0 the row is available at once.
    row = attachment_row(
        writer,
        sys_id,
        table_name,
        table_sys_id,
        file_name,
        content_type,
        user.name,
        now_str(now),
        available=delay <= 0,
    )
    emu.blobs.commit(writer, sys_id)
    emu.store.insert_attachment(row, now + delay if delay > 0 else None)
    location = f"{base_url(request)}{api_prefix(request)}/attachment/{sys_id}"
    result = present(request, row)
    if emu.config.by_name_fields:
        # The POST answers' documented schema has these two (GET's has not).
        result["created_by_name"] = result["updated_by_name"] = full_name(user.name)
    return render(request, {"result": result}, 201, {"Location": location})


def full_name(user: str) -> str:
    """The user's full name as sys_user shows it (the emulator has no names: its own)."""
    return "System Administrator" if user == "admin" else user


async def post_file(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    params = request.query_params
    try:
        for name in ("table_name", "table_sys_id", "file_name"):
            if not params.get(name):
                raise missing(name)
        content_type = request.headers.get("content-type", "")
        if not content_type:
            raise ApiError(400, "Content-Type header is mandatory to post file attachments", None)
        check_target(emu, user, params["table_name"], params["table_sys_id"])
        check_extension(emu.config, params["file_name"])
        declared = request.headers.get("content-length")
        if declared and declared.isdigit():
            check_size(emu.config, int(declared))
    except ApiError:
        await drain(request)
        raise
    writer = emu.blobs.writer(emu.config.max_size_bytes)
    try:
        async for chunk in request.stream():
            writer.write(chunk)
        return store_upload(
            request,
            emu,
            user,
            writer,
            params["table_name"],
            params["table_sys_id"],
            params["file_name"],
            content_type,
        )
    finally:
        writer.abort()  # no-op once committed (the temp file was renamed)


class MultipartUpload:
    """Callbacks for python-multipart's streaming parser: form fields in memory, the file to
    disk."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.fields: dict[str, str] = {}
        self.writer: BlobWriter | None = None
        self.part_name = ""
        self.part_file_name: str | None = None
        self.file_name: str | None = None
        self.file_type = ""
        self._headers: dict[str, str] = {}
        self._field, self._value = b"", b""
        self._data = bytearray()
        self._to_file = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers, self._data, self._to_file = {}, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        # latin-1 round-trips the raw bytes; parse_options_header hands them back as bytes
        # (UTF-8 names).
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get("content-disposition", ""))
        self.part_name = opts.get(b"name", b"").decode("utf-8", "replace")
        filename = opts.get(b"filename")
        part_type = self._headers.get("content-type")
        # The file is the part with a filename, or any typed part that is not a known form field.
        is_file = filename is not None or (
            part_type is not None and self.part_name not in FORM_FIELDS
        )
        if is_file and self.writer is None:
            self.writer = self.emu.blobs.writer(self.emu.config.max_size_bytes)
            self.file_name = filename.decode("utf-8", "replace") if filename is not None else None
            self.file_type = part_type or ""
            self._to_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._to_file:
            assert self.writer is not None
            self.writer.write(data[start:end])
        elif len(self._data) < MAX_FIELD_BYTES:
            self._data += data[start:end]

    def on_part_end(self) -> None:
        if not self._to_file and self.part_name:
            self.fields[self.part_name] = self._data.decode("utf-8", "replace")


async def read_multipart(
    request: Request, emu: Emulator, upload: MultipartUpload, no_boundary: str
) -> None:
    """Stream a multipart/form-data body through `upload` (its file part goes to disk)."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    boundary = opts.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        await drain(request)  # e.g. pysnow's multipart=True, which sends no boundary
        raise ApiError(400, no_boundary, "Content-Type must be multipart/form-data with a boundary")
    parser = MultipartParser(boundary, cast(Any, upload.callbacks()))
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ValueError as exc:  # python-multipart's MultipartParseError
        raise ApiError(400, "Failed to parse the multipart request", str(exc)) from None


async def post_upload(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    upload = MultipartUpload(emu)
    try:
        await read_multipart(
            request,
            emu,
            upload,
            "Failed to create the attachment. File part might be missing in the request.",
        )
        return finish_multipart(request, emu, user, upload)
    finally:
        if upload.writer is not None:
            upload.writer.abort()


def finish_multipart(
    request: Request, emu: Emulator, user: User, upload: MultipartUpload
) -> Response:
    fields = upload.fields
    table_name = fields.get("table_name", "")
    table_sys_id = fields.get("table_sys_id") or fields.get("record_sys_id", "")  # Geneva alias
    if not table_name:
        raise missing("table_name")
    if not table_sys_id:
        raise missing("table_sys_id")
    if upload.writer is None:
        raise ApiError(
            400, "Failed to create the attachment. File part might be missing in the request.", None
        )
    file_name = fields.get("file_name") or upload.file_name
    if not file_name:
        raise missing("file_name")
    check_target(emu, user, table_name, table_sys_id)
    check_extension(emu.config, file_name)
    content_type = (
        upload.file_type or mimetypes.guess_type(file_name)[0] or "application/octet-stream"
    )
    return store_upload(
        request, emu, user, upload.writer, table_name, table_sys_id, file_name, content_type
    )
