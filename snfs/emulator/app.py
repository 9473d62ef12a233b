"""Route table: the instance's REST paths under /api/now and /api/now/v1, OAuth, test controls."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from snfs.emulator import api_attachments as att
from snfs.emulator import api_control as ctl
from snfs.emulator import api_table as tbl
from snfs.emulator import cccif
from snfs.emulator.common import ApiError, error_response, require_user
from snfs.emulator.middleware import EmulatorMiddleware
from snfs.emulator.state import Emulator
from snfs.emulator.stats import API_PREFIX, ROUTES
from snfs.emulator.uploads import post_file, post_upload

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def api_routes(rename: bool) -> list[Route]:
    routes: list[Route] = []
    for prefix in ("/api/now", "/api/now/v1"):
        routes += [
            Route(f"{prefix}/attachment", att.list_attachments, methods=["GET"]),
            Route(f"{prefix}/attachment/file", post_file, methods=["POST"]),
            Route(f"{prefix}/attachment/upload", post_upload, methods=["POST"]),
            Route(f"{prefix}/attachment/{{sys_id}}", att.get_attachment, methods=["GET"]),
            Route(f"{prefix}/attachment/{{sys_id}}", att.delete_attachment, methods=["DELETE"]),
            Route(f"{prefix}/attachment/{{sys_id}}/file", att.get_file, methods=["GET"]),
            Route(f"{prefix}/table/{{table}}", tbl.list_records, methods=["GET"]),
            Route(f"{prefix}/table/{{table}}", tbl.create_record, methods=["POST"]),
            Route(f"{prefix}/table/{{table}}/{{sys_id}}", tbl.get_record, methods=["GET"]),
            Route(f"{prefix}/table/{{table}}/{{sys_id}}", tbl.delete_record, methods=["DELETE"]),
            Route(f"{prefix}/stats/{{table}}", tbl.stats, methods=["GET"]),
            Route(f"{prefix}/cccif/media/upload", cccif.upload, methods=["POST"]),
            Route(f"{prefix}/cs/media/{{token}}", cccif.media, methods=["GET"]),
        ]
        if rename:  # only `--release australia` documents PATCH; else 405 (see unknown_path)
            routes.append(
                Route(f"{prefix}/attachment/{{sys_id}}", att.rename_attachment, methods=["PATCH"])
            )
    # The CCCIF document: "Versioned URL: /api/now/{api_version}/cccif/media/upload ... For
    # example, v1 or v2".
    routes.append(Route("/api/now/v2/cccif/media/upload", cccif.upload, methods=["POST"]))
    return routes


def control_routes() -> list[Route]:
    return [
        Route("/oauth_token.do", ctl.oauth_token, methods=["POST"]),
        Route("/__emulator__/stats", ctl.get_stats, methods=["GET"]),
        Route("/__emulator__/faults", ctl.add_fault, methods=["POST"]),
        Route("/__emulator__/faults", ctl.clear_faults, methods=["DELETE"]),
        Route("/__emulator__/release", ctl.release, methods=["POST"]),
        Route("/__emulator__/reset", ctl.reset, methods=["POST"]),
        Route("/__emulator__/state", ctl.state, methods=["GET", "POST"]),
    ]


def known_path(path: str) -> bool:
    """Whether some method serves this path (then a wrong method is 405, not an unknown URI)."""
    m = API_PREFIX.match(path)
    if not m:
        return False
    rel = path[m.end() :]
    return any(pattern.match(rel) for _, _, pattern in ROUTES)


async def unknown_path(request: Request) -> Response:
    require_user(request)
    if known_path(request.url.path):
        # Exact 405 body is undocumented (REST API HTTP response codes); this mirrors the
        # instance's envelope.
        raise ApiError(
            405, "Method not Supported", f"{request.method} method not supported for API"
        )
    status = request.app.state.emu.config.unknown_path_status
    raise ApiError(status, "Requested URI does not represent any resource", None)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request, exc)


async def server_error(request: Request, exc: Exception) -> Response:
    return error_response(
        request, ApiError(500, "Internal server error", str(exc) or type(exc).__name__)
    )


def build_app(emu: Emulator) -> Any:
    routes = api_routes(emu.config.rename) + control_routes()
    routes.append(Route("/{path:path}", unknown_path, methods=ALL_METHODS))
    app = Starlette(
        routes=routes, exception_handlers={ApiError: api_error, Exception: server_error}
    )
    app.state.emu = emu
    return EmulatorMiddleware(app, emu)
