"""Attachment API: list, metadata, download, delete, rename (uploads live in uploads.py)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from snfs.emulator.auth import User
from snfs.emulator.common import (
    ApiError,
    acl_denied,
    emu_of,
    list_headers,
    not_found,
    paging,
    present,
    quota_exceeded,
    render,
    require_user,
    spend,
)
from snfs.emulator.db import ATTACHMENT_FIELDS, attachment_field
from snfs.emulator.download import file_response
from snfs.emulator.encoded_query import CompiledQuery, compile_query
from snfs.emulator.state import Emulator
from snfs.emulator.tables import can_access, readable_tables
from snfs.emulator.uploads import check_extension


def denied_to(emu: Emulator, user: User) -> list[CompiledQuery]:
    """The --deny rules of this user: attachments it may not read, whatever their table."""
    return [compile_query(q, attachment_field, False) for u, q in emu.config.deny if u == user.name]


def readable_attachment(emu: Emulator, user: User, sys_id: str) -> dict[str, str]:
    row = emu.store.get_attachment(sys_id)
    if row is None:
        raise not_found()
    deny = denied_to(emu, user)
    if not can_access(user.roles, row["table_name"]) or (
        deny and not emu.store.allowed([sys_id], None, deny)
    ):
        raise acl_denied(emu)
    return row


async def list_attachments(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    limit, offset = paging(request, emu.config.attachment_default_limit)
    query = compile_query(
        request.query_params.get("sysparm_query", ""),
        attachment_field,
        emu.config.invalid_query_returns_no_rows,
    )
    no_count = request.query_params.get("sysparm_no_count", "").lower() == "true"
    fields = wanted_fields(request)
    page = emu.store.list_attachments(
        query,
        limit,
        offset,
        readable_tables(user.roles),
        denied_to(emu, user),
        emu.config.limit_before_acl,
        count=not no_count,
        fields=fields,
    )
    if fields and "download_link" not in fields:  # no per-row link to build
        result = [{k: v for k, v in row.items() if k in fields} for row in page.rows]
    else:
        result = [select_fields(request, present(request, row)) for row in page.rows]
    body: dict[str, Any] = {"result": result}
    done = await spend(emu, page.scanned)
    if done is not None:  # cancelled by the quota: the rows scanned so far, and the error
        body = {"result": result[:done], **quota_exceeded()}
    if no_count:  # no `select count(*)`: no X-Total-Count and no Link
        return render(request, body)
    return render(request, body, headers=list_headers(request, limit, offset, page.total))


def wanted_fields(request: Request) -> set[str]:
    """The known names of `sysparm_fields` (empty: every field)."""
    raw = request.query_params.get("sysparm_fields", "")
    return {f.strip() for f in raw.split(",") if f.strip() in (*ATTACHMENT_FIELDS, "download_link")}


def select_fields(request: Request, row: dict[str, str]) -> dict[str, str]:
    """`sysparm_fields`: only the named fields, in the row's order; unknown names are ignored."""
    wanted = {f.strip() for f in request.query_params.get("sysparm_fields", "").split(",")}
    picked = {k: v for k, v in row.items() if k in wanted}
    return picked if picked else row


async def get_attachment(request: Request) -> Response:
    user = require_user(request)
    row = readable_attachment(emu_of(request), user, request.path_params["sys_id"])
    return render(request, {"result": present(request, row)})


def metadata_header(row: dict[str, str]) -> str:
    """X-Attachment-Metadata in the real spacing: `{  "k" : "v",  "k2" : "v2"}` (without
    download_link)."""
    parts = [f"{json.dumps(k)} : {json.dumps(v)}" for k, v in row.items()]
    return "{  " + ",  ".join(parts) + "}"


async def get_file(request: Request) -> Any:
    user = require_user(request)
    emu = emu_of(request)
    row = readable_attachment(emu, user, request.path_params["sys_id"])
    path = emu.blobs.path(row["sys_id"])
    if not path.exists():
        raise ApiError(500, "Attachment content is missing", None)
    return file_response(request, emu.config, row, path, metadata_header(row))


async def delete_attachment(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    row = readable_attachment(emu, user, request.path_params["sys_id"])
    emu.store.delete_attachment(row["sys_id"])
    emu.blobs.delete(row["sys_id"])
    return Response(status_code=204)


async def rename_attachment(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    row = readable_attachment(emu, user, request.path_params["sys_id"])
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(400, "Invalid request body", "Request body is not valid JSON") from None
    name = body.get("file_name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise ApiError(400, "Missing mandatory parameter: file_name", None)
    check_extension(emu.config, name)
    emu.store.rename_attachment(row["sys_id"], name, user.name)
    return Response(status_code=204)
