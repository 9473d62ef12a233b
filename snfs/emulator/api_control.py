"""Emulator-only test controls under /__emulator__/ (admin only, never counted in stats)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from snfs.emulator.auth import OAuthError
from snfs.emulator.common import ApiError, emu_of, require_user
from snfs.emulator.faults import parse_fault


def require_admin(request: Request) -> None:
    user = require_user(request)
    if "admin" not in user.roles:
        raise ApiError(403, "User Not Authorized", "The test controls need the admin role")


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ApiError(400, "Invalid JSON body", None) from None


async def get_stats(request: Request) -> Response:
    require_admin(request)
    emu = emu_of(request)
    sessions = getattr(emu, "sessions", None)  # the other kinds have no session lock
    extra = {"sessions": sessions.created} if sessions is not None else {}
    return JSONResponse(dict(emu.stats.as_json(), **extra))


async def add_fault(request: Request) -> Response:
    require_admin(request)
    emu = emu_of(request)
    try:
        fault = parse_fault(await json_body(request))
    except (ValueError, TypeError) as exc:
        raise ApiError(400, "Invalid fault", str(exc)) from None
    return JSONResponse({"queued": emu.faults.add(fault)})


async def clear_faults(request: Request) -> Response:
    require_admin(request)
    emu = emu_of(request)
    emu.faults.clear()
    return JSONResponse({"queued": 0})


async def release(request: Request) -> Response:
    """Send every answer held by a `hold` fault."""
    require_admin(request)
    holds = emu_of(request).faults.holds
    released = holds.held
    holds.release()
    return JSONResponse({"released": released})


async def reset(request: Request) -> Response:
    """{} clears stats and faults; {"data": true} also wipes every record and attachment."""
    require_admin(request)
    emu = emu_of(request)
    body = await json_body(request)
    emu.stats.reset()
    if getattr(emu, "sessions", None) is not None:
        emu.sessions.created = 0
    emu.faults.clear()
    if isinstance(body, dict) and body.get("data"):
        emu.wipe()
    return JSONResponse({"reset": True, "data": bool(isinstance(body, dict) and body.get("data"))})


async def state(request: Request) -> Response:
    """{"promote": true} makes every pending attachment available now (skips --state-delay);
    {"hibernate": true|false} puts the instance to sleep (HTML pages) or wakes it up."""
    require_admin(request)
    emu = emu_of(request)
    body = await json_body(request)
    if isinstance(body, dict) and body.get("promote"):
        emu.store.promote_pending(float("inf"))
    if isinstance(body, dict) and isinstance(body.get("hibernate"), bool):
        emu.config.hibernating = body["hibernate"]
    return JSONResponse(
        {
            "faults_queued": emu.faults.queued(),
            "held": emu.faults.holds.held,
            "config": {
                "range": emu.config.range,
                "rename": emu.config.rename,
                "release": emu.config.release,
                "hibernating": emu.config.hibernating,
                "gzip": emu.config.gzip,
                "state_delay": emu.config.state_delay,
                "max_size_mb": emu.config.max_size_mb,
                "extensions": sorted(emu.config.extensions),
            },
        }
    )


async def oauth_token(request: Request) -> Response:
    """POST /oauth_token.do, form-encoded (JSON bodies fail, as the docs warn)."""
    emu = emu_of(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    try:
        if ctype != "application/x-www-form-urlencoded":
            raise OAuthError(401, {"error_description": "access_denied", "error": "server_error"})
        form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        return JSONResponse(emu.auth.grant(form), headers={"Cache-Control": "no-store"})
    except OAuthError as err:
        return JSONResponse(err.body, err.status)
