"""Shared HTTP pieces: the instance's JSON/XML envelopes, errors, auth checks and paging headers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus
from xml.sax.saxutils import escape

import trio
from starlette.requests import Request
from starlette.responses import Response

from snfs.emulator.auth import User
from snfs.emulator.state import Emulator

JSON_TYPE = "application/json;charset=UTF-8"
XML_TYPE = "application/xml;charset=UTF-8"
NOT_FOUND = ("No Record found", "Record doesn't exist or ACL restricts the record retrieval")
ACL_DENIED = "Insufficient rights to query records"


class ApiError(Exception):
    """Answered as `{"error": {"message", "detail"}, "status": "failure"}`."""

    def __init__(
        self,
        status: int,
        message: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = (
            status,
            message,
            detail,
            headers or {},
        )


def not_found() -> ApiError:
    return ApiError(404, *NOT_FOUND)


def envelope(message: str, detail: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "detail": detail}, "status": "failure"}


def wants_xml(request: Request) -> bool:
    """XML only when the client asks for it before (or instead of) JSON."""
    accept = request.headers.get("accept", "").lower()
    xml_at = accept.find("application/xml")
    if xml_at < 0:
        return False
    json_at = accept.find("application/json")
    return json_at < 0 or xml_at < json_at


def to_xml(tag: str, value: Any) -> str:
    if isinstance(value, list):
        return "".join(to_xml(tag, item) for item in value)
    if isinstance(value, dict):
        inner = "".join(to_xml(k, v) for k, v in value.items())
        return f"<{tag}>{inner}</{tag}>"
    text = "" if value is None else escape(str(value))
    return f"<{tag}>{text}</{tag}>"


def render(
    request: Request, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    if wants_xml(request):
        inner = "".join(to_xml(k, v) for k, v in body.items())
        text = f'<?xml version="1.0" encoding="UTF-8"?><response>{inner}</response>'
        return Response(text.encode(), status, headers, media_type=XML_TYPE)
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(raw, status, headers, media_type=JSON_TYPE)


def error_response(request: Request, err: ApiError) -> Response:
    return render(request, envelope(err.message, err.detail), err.status, err.headers)


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "User Not Authenticated",
        "Required to provide Auth information",
        {"WWW-Authenticate": 'Basic realm="Service-now"'},
    )


def require_user(request: Request) -> User:
    emu = request.app.state.emu
    header = request.headers.get("authorization")
    user = emu.auth.authenticate(header)
    if user is None:
        raise unauthorized()
    mfa = getattr(emu.config, "mfa_users", ())  # the other kinds share the test controls
    if user.name in mfa and (header or "").lower().startswith("basic "):
        # REST API docs: before Yokohama, Basic auth of a user with MFA is refused with
        # X-MFA_TOKEN (the password alone is not enough).
        err = unauthorized()
        err.headers["X-MFA_TOKEN"] = "invalid"
        raise err
    return user


async def spend(emu: Emulator, rows: int) -> int | None:
    """Spend the server time of scanning `rows` (--row-time); past the transaction quota the
    transaction is cancelled: returns how many rows it got through, else None."""
    cost = rows * emu.config.row_time
    if cost <= 0:
        return None
    if cost <= emu.config.quota:
        await trio.sleep(cost)
        return None
    await trio.sleep(emu.config.quota)
    return int(emu.config.quota / emu.config.row_time)


def quota_exceeded() -> dict[str, Any]:
    """What a transaction cancelled by its quota adds to a 200 body (KB0778443)."""
    return {
        "error": {
            "message": "Transaction cancelled: maximum execution time exceeded",
            "detail": "Check the transaction quota rules (REST Table/Attachment/Aggregate API)",
        },
        "status": "failure",
    }


def base_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def api_prefix(request: Request) -> str:
    """`/api/now/v1` or `/api/now`, as the client used it (for Location headers)."""
    return "/api/now/v1" if request.url.path.startswith("/api/now/v1/") else "/api/now"


def paging(request: Request, default_limit: int) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        try:
            return int(request.query_params.get(name, ""))
        except ValueError:
            return default

    limit = number("sysparm_limit", default_limit)
    offset = max(0, number("sysparm_offset", 0))
    return (limit if limit > 0 else default_limit), offset


def link_header(request: Request, limit: int, offset: int, total: int) -> str | None:
    """Link as real instances send it: only with more than one page; params echoed as sent.

    prev follows every real sample: offset-limit when offset > 0 (may be negative) and -1 on the
    first page when limit is 1 (dev86373, SWIMLANE); absent on the first page otherwise.
    """
    if (
        total <= limit
        or request.query_params.get("sysparm_suppress_pagination_header", "").lower() == "true"
    ):
        return None
    raw = request.scope.get("query_string", b"").decode("latin-1")
    kept = [
        p
        for p in raw.split("&")
        if p and unquote_plus(p.split("=", 1)[0]) not in ("sysparm_offset", "sysparm_limit")
    ]
    url = f"{base_url(request)}{request.url.path}?"

    def link(off: int, rel: str) -> str:
        query = "&".join(kept + [f"sysparm_limit={limit}", f"sysparm_offset={off}"])
        return f'<{url}{query}>;rel="{rel}"'

    links = [link(0, "first")]
    if offset > 0 or limit == 1:
        links.append(link(offset - limit, "prev"))
    if offset + limit < total:
        links.append(link(offset + limit, "next"))
    links.append(link((total - 1) // limit * limit, "last"))
    return ",".join(links)


def list_headers(request: Request, limit: int, offset: int, total: int) -> dict[str, str]:
    headers = {"X-Total-Count": str(total)}
    link = link_header(request, limit, offset, total)
    if link:
        headers["Link"] = link
    return headers


def name_value_filters(request: Request, known: set[str] | tuple[str, ...]) -> str:
    """Table/Stats API `&field=value` filters, as an encoded query to AND with sysparm_query."""
    terms = []
    for key, value in request.query_params.multi_items():
        if not key.startswith("sysparm_") and key in known:
            terms.append(f"{key}={value.replace('^', '^^')}")
    return "^".join(terms)


def emu_of(request: Request) -> Emulator:
    return request.app.state.emu


def acl_denied(emu: Emulator) -> ApiError:
    """Direct access to a record the user's roles do not cover: 404 like the Attachment API docs
    ("does not exist, or the current user cannot access it"), or 403 (--acl-denied-status)."""
    if emu.config.acl_denied_status == 404:
        return not_found()
    return ApiError(emu.config.acl_denied_status, ACL_DENIED, None)


def present(request: Request, row: dict[str, str]) -> dict[str, str]:
    """Attachment metadata in the real field order, with download_link after sys_updated_by."""
    out: dict[str, str] = {}
    for key, value in row.items():
        out[key] = value
        if key == "sys_updated_by":
            out["download_link"] = (
                f"{base_url(request)}{api_prefix(request)}/attachment/{row['sys_id']}/file"
            )
    return out
