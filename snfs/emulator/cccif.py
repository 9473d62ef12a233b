"""CCCIF Media Resource API: POST /cccif/media/upload, and GET /cs/media/{token} for its mediaUrl.

A chat bot uploads a user's private file (multipart: `file` required, `user_id` required,
`provider_application_id` optional); the file lands in sys_attachment and the answer carries
`mediaUrl`, `name`, `state` and `attachmentId` (CCCIF Media Resource API docs).

As the document says: the versioned URL takes `v1` or `v2` (and the default URL none); the
answer is always JSON ("Content-Type: Only supports application/json"), errors too
(`{"error": {"message", "detail"}}`), whatever the request's Accept.

Uncertain, and chosen here (docs/EMULATOR.md): the sys_attachment row's `table_name` is
`sys_cs_media` and its `table_sys_id` a stable id derived from `user_id` (the documents do not say
which record a CCCIF upload is attached to); the mediaUrl token encodes the attachment's sys_id,
so no extra state is kept; any authenticated user may upload.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from snfs.emulator.api_attachments import metadata_header
from snfs.emulator.common import (
    ApiError,
    base_url,
    emu_of,
    envelope,
    not_found,
    require_user,
)
from snfs.emulator.download import file_response
from snfs.emulator.uploads import (
    MultipartUpload,
    check_extension,
    check_size,
    missing,
    read_multipart,
    store_upload,
)

MEDIA_TABLE = "sys_cs_media"


def media_record(user_id: str, provider_application_id: str = "") -> str:
    """The sys_id-shaped record id a user's media hangs off (stable per user_id and provider
    application: a conversation of that user through that application)."""
    key = (
        f"cccif:{user_id}"
        if not provider_application_id
        else f"cccif:{provider_application_id}:{user_id}"
    )
    return hashlib.md5(key.encode()).hexdigest()


def media_token(sys_id: str) -> str:
    raw = bytes.fromhex(sys_id) + secrets.token_bytes(32)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_sys_id(token: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        return None
    return raw[:16].hex() if len(raw) == 48 else None


def json_answer(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> Response:
    """The document: the answer's Content-Type "only supports application/json"."""
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(raw, status, headers, media_type="application/json")


async def upload(request: Request) -> Response:
    try:
        return await _upload(request)
    except ApiError as e:
        return json_answer(envelope(e.message, e.detail), e.status, e.headers)


async def _upload(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    parts = MultipartUpload(emu)
    try:
        await read_multipart(request, emu, parts, "Bad Request")
        user_id = parts.fields.get("user_id", "")
        if not user_id:
            raise missing("user_id")
        if parts.writer is None or not parts.file_name:
            raise missing("file")
        app_id = parts.fields.get("provider_application_id", "")
        if app_id and not re.fullmatch(r"[0-9a-f]{32}", app_id):
            raise ApiError(400, "Invalid provider_application_id", "not a sys_id")
        check_extension(emu.config, parts.file_name)
        check_size(emu.config, parts.writer.size)
        stored = store_upload(
            request,
            emu,
            user,
            parts.writer,
            MEDIA_TABLE,
            media_record(user_id, app_id),
            parts.file_name,
            parts.file_type or "application/octet-stream",
        )
    finally:
        if parts.writer is not None:
            parts.writer.abort()
    row = emu.store.get_attachment(_sys_id_of(stored))
    assert row is not None
    body = {
        "result": {
            "mediaUrl": f"{base_url(request)}/api/now/v1/cs/media/{media_token(row['sys_id'])}",
            "name": row["file_name"],
            "state": row["state"],
            "attachmentId": row["sys_id"],
        }
    }
    return json_answer(body, 201)


def _sys_id_of(response: Response) -> str:
    return response.headers["location"].rsplit("/", 1)[1]


async def media(request: Request) -> Any:
    """The mediaUrl: the file, to whoever holds the (unguessable) token and is signed in."""
    require_user(request)
    emu = emu_of(request)
    sys_id = token_sys_id(request.path_params["token"])
    row = emu.store.get_attachment(sys_id) if sys_id else None
    if row is None:
        raise not_found()
    return file_response(
        request, emu.config, row, emu.blobs.path(row["sys_id"]), metadata_header(row)
    )
