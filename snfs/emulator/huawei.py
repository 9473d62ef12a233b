"""`snfs emulator --kind huawei`: Huawei Cloud OSM's service-ticket attachment API ("accessorys").

Under `/v2/servicerequest/`, `X-Auth-Token` required (`--token TOKEN`, repeatable; default
`test-token`). Facts from the public API reference (support.huaweicloud.com, api-ticket); the
rest are documented choices (docs/EMULATOR.md, "Huawei Cloud OSM"):

- `POST /accessorys` multipart: `file` + `form_data` (JSON string
  `{"fileName","accessoryFrom","uploadType"}`, ≤ 5000 chars) → 200 `{"accessory_id": ...}`
- `GET /accessorys/limits` → `{"accessory_limit":{"limit_count","limit_size","limit_file_type"}}`,
  enforced on upload (`--limit-size MB`, `--limit-file-type LIST`, `--limit-count N`: the number
  of stored accessories per `accessoryFrom` value; 0 = no limit)
- `GET /accessorys/{accessory_id}` → the file stream
- `GET /accessorys/access-urls?accessory_ids=a,b` →
  `{"accessory_urls":[{"accessory_id","accessory_url"}]}`
  (signed, expiring URLs that need no token, like OBS links)
- `DELETE /accessorys/{accessory_id}` → 200 `{"error_code":"","error_msg":""}`
- no list endpoint.

As document 003 says: `form_data` must name `accessoryFrom` (no default); `X-Language` and
`X-Time-Zone` are 1 to 32 characters when sent (400 else); `X-Language` is zh-cn by default, and
the accessory errors' `error_msg` is then in Chinese (English for an `en*` language). The limits
call is not in document 003 (which names "the API for querying attachment restrictions" without
its path): `--no-limits` takes it away (404 APIGW.0101, as for any unpublished API).

Errors are `{"error_code": ..., "error_msg": ...}`. Business errors (limits, parameters) are 400
by default; `--business-errors-200` answers them with HTTP 200 and the error body, as the
doc's error-code table lists status 200 for the `OSM.0101xxxx` codes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
import re
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from snfs.emulator.auth import Auth, User
from snfs.emulator.common import ApiError
from snfs.emulator.download import FileStream, content_type_header
from snfs.emulator.kinds import (
    HttpError,
    KindEmulator,
    SqliteStore,
    StreamingForm,
    compile_routes,
    control_routes,
    disposition,
    drain,
    http_date,
    json_response,
    kind_app,
    parse_multipart,
    request_base,
)
from snfs.emulator.switches import switch

PREFIX = re.compile(r"^/v2/servicerequest(?=/)")
_ID = r"[^/]+"
ROUTES = compile_routes(
    [
        ("POST", "/accessorys", "/accessorys"),
        ("GET", "/accessorys/limits", "/accessorys/limits"),
        ("GET", "/accessorys/access-urls", "/accessorys/access-urls"),
        ("GET", "/accessorys/{accessory_id}", f"/accessorys/(?!limits$|access-urls$){_ID}"),
        ("DELETE", "/accessorys/{accessory_id}", f"/accessorys/{_ID}"),
    ]
)
OBS_PREFIX = "/obs/"
DEFAULT_FILE_TYPES = (
    "txt,log,csv,json,xml,pdf,doc,docx,xls,xlsx,ppt,pptx,png,jpg,jpeg,gif,bmp,zip,rar,7z,gz,tar"
)
FORM_DATA_MAX = 5000
TOKEN_MAX = 5000
URL_LIFETIME = 3600

# Error codes. OSM.0001..0004 and OSM.01010001 are the doc's; the accessory-specific ones are the
# emulator's choice (the real codes are not public), in the doc's OSM.0101xxxx family.
E_PARAM = ("OSM.0001", "Failed")
E_PARAM_VALIDATION = "OSM.01010001"
E_SIZE = "OSM.01010101"
E_TYPE = "OSM.01010102"
E_COUNT = "OSM.01010103"
E_NOT_FOUND = "OSM.01010104"
E_AUTH = "APIGW.0301"  # API Gateway: "Incorrect IAM authentication information"
E_NO_API = "APIGW.0101"  # API Gateway: the API does not exist
HEADER_MAX = 32  # X-Language, X-Time-Zone (document 003)
# error_msg in the default language, zh-cn (the emulator's wording).
ZH = {
    E_SIZE: "附件大小超过限制",
    E_TYPE: "附件文件类型不允许",
    E_COUNT: "附件数量超过限制",
    E_NOT_FOUND: "附件不存在",
}
PARAM_EN, PARAM_ZH = "Param validation fail.", "参数校验失败。"


def err(code: str, msg: str) -> dict[str, str]:
    return {"error_code": code, "error_msg": msg}


GROUP = "huawei (--kind huawei)"


@dataclass
class HWConfig:
    """Fields with `switch(...)` are `snfs emulator --kind huawei` switches, declared here once."""

    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path = Path(".")
    tokens: list[str] = switch(
        help="an accepted X-Auth-Token (repeatable; default test-token)",
        flag="--token",
        append=True,
        metavar="TOKEN",
        group=GROUP,
        factory=lambda: ["test-token"],
    )
    limit_size_mb: float = switch(
        4.0, "limit_size", flag="--limit-size", type=float, metavar="MB", group=GROUP
    )
    limit_file_type: str = switch(
        DEFAULT_FILE_TYPES, "limit_file_type (comma list)", metavar="LIST", group=GROUP
    )
    limit_count: int = switch(
        100,
        "limit_count, stored accessories per accessoryFrom (0: none)",
        type=int,
        metavar="N",
        convert=lambda v: max(0, v),
        group=GROUP,
    )
    business_errors_200: bool = switch(
        False, "answer limit/parameter errors with HTTP 200 + error_code", const=True, group=GROUP
    )
    not_found_status: int = switch(
        404, "status for an unknown accessory_id", type=int, choices=(400, 404), group=GROUP
    )
    chunk_size: int = 1024 * 1024
    limits_api: bool = switch(  # GET /accessorys/limits (not in document 003)
        True,
        "no GET /accessorys/limits (not in the upload document): 404",
        flag="--no-limits",
        const=False,
        group=GROUP,
    )

    @property
    def limit_size(self) -> int:
        return int(self.limit_size_mb * 1024 * 1024)

    @property
    def file_types(self) -> frozenset[str]:
        return frozenset(
            t.strip().lstrip(".").lower() for t in self.limit_file_type.split(",") if t.strip()
        )


SCHEMA = """
CREATE TABLE IF NOT EXISTS hw_accessorys (
    accessory_id TEXT PRIMARY KEY, accessory_from TEXT NOT NULL, file_name TEXT NOT NULL,
    upload_type INTEGER NOT NULL, size INTEGER NOT NULL, content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS hw_from ON hw_accessorys (accessory_from);
CREATE TABLE IF NOT EXISTS hw_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class HWStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def wipe(self) -> None:
        self.conn.execute("DELETE FROM hw_accessorys")

    def secret(self) -> bytes:
        row = self.conn.execute("SELECT value FROM hw_meta WHERE key = 'url_key'").fetchone()
        if row:
            return bytes.fromhex(row[0])
        key = secrets.token_bytes(32)
        self.conn.execute("INSERT INTO hw_meta VALUES ('url_key', ?)", (key.hex(),))
        return key

    def add(self, row: dict[str, Any]) -> None:
        self.conn.execute(
            f"INSERT INTO hw_accessorys ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )

    def get(self, accessory_id: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT * FROM hw_accessorys WHERE accessory_id = ?", (accessory_id,)
        ).fetchone()

    def count(self, accessory_from: str) -> int:
        return self.conn.execute(
            "SELECT COUNT(*) FROM hw_accessorys WHERE accessory_from = ?", (accessory_from,)
        ).fetchone()[0]

    def delete(self, accessory_id: str) -> bool:
        return (
            self.conn.execute(
                "DELETE FROM hw_accessorys WHERE accessory_id = ?", (accessory_id,)
            ).rowcount
            > 0
        )


class HuaweiEmulator(KindEmulator):
    kind = "huawei"
    config: HWConfig
    store: HWStore

    def __init__(self, config: HWConfig) -> None:
        # The test controls (/__emulator__/) take Basic admin:admin, like the other kinds.
        admin = Auth({"admin": User("admin", "admin", frozenset({"admin"}))}, {})
        super().__init__(config, HWStore, admin, ROUTES, PREFIX)
        self.url_key = self.store.secret()

    def sign(self, accessory_id: str, expires: int) -> str:
        return hmac.new(
            self.url_key, f"{accessory_id}\n{expires}".encode(), hashlib.sha256
        ).hexdigest()


def emu_of(request: Request) -> HuaweiEmulator:
    return request.app.state.emu


def check_locale_headers(request: Request) -> None:
    for name in ("x-language", "x-time-zone"):
        value = request.headers.get(name)
        if value is not None and not 1 <= len(value) <= HEADER_MAX:
            raise HttpError(
                400,
                err(
                    E_PARAM_VALIDATION, f"Param validation fail. {name} must be 1 to 32 characters"
                ),
            )


def localized(handler: Any) -> Any:
    """The handler, with its errors' `error_msg` in the request's X-Language (zh-cn default)."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except HttpError as e:
            language = request.headers.get("x-language", "zh-cn").lower()
            code, msg = e.body.get("error_code", ""), e.body.get("error_msg", "")
            if not language.startswith("en") and code in ZH:
                e.body = err(code, ZH[code])
            elif not language.startswith("en") and msg.startswith(PARAM_EN):
                e.body = err(code, PARAM_ZH + msg[len(PARAM_EN) :])  # the field names stay
            raise

    return run


def authorize(request: Request) -> HuaweiEmulator:
    emu = emu_of(request)
    check_locale_headers(request)
    token = request.headers.get("x-auth-token")
    if token is not None and len(token) > TOKEN_MAX:
        raise HttpError(400, err(E_PARAM[0], f"X-Auth-Token is longer than {TOKEN_MAX} characters"))
    if not token or not any(hmac.compare_digest(token, t) for t in emu.config.tokens):
        raise HttpError(
            401,
            err(
                E_AUTH,
                "Incorrect IAM authentication information: "
                + ("x-auth-token not found" if not token else "verify aksk signature fail"),
            ),
        )
    return emu


def business(emu: HuaweiEmulator, code: str, msg: str) -> HttpError:
    return HttpError(200 if emu.config.business_errors_200 else 400, err(code, msg))


async def limits(request: Request) -> Response:
    emu = authorize(request)
    c = emu.config
    return json_response(
        {
            "accessory_limit": {
                "limit_count": str(c.limit_count),
                "limit_size": f"{c.limit_size_mb:g}",
                "limit_file_type": ",".join(sorted(c.file_types)),
            }
        }
    )


def parse_form_data(emu: HuaweiEmulator, raw: str | None) -> tuple[str, str, int]:
    if raw is None or not raw.strip():
        raise business(emu, E_PARAM_VALIDATION, "Param validation fail. form_data is required")
    if len(raw) > FORM_DATA_MAX:
        raise business(
            emu,
            E_PARAM_VALIDATION,
            f"Param validation fail. form_data is longer than {FORM_DATA_MAX} characters",
        )
    try:
        fd = json.loads(raw)
    except ValueError:
        raise business(
            emu, E_PARAM_VALIDATION, "Param validation fail. form_data is not JSON"
        ) from None
    if not isinstance(fd, dict):
        raise business(
            emu, E_PARAM_VALIDATION, "Param validation fail. form_data is not a JSON object"
        )
    name = fd.get("fileName")
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise business(emu, E_PARAM_VALIDATION, "Param validation fail. fileName is required")
    source = fd.get("accessoryFrom")  # required: document 003 gives no default
    if not isinstance(source, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", source):
        raise business(emu, E_PARAM_VALIDATION, "Param validation fail. accessoryFrom is invalid")
    upload_type = fd.get("uploadType", 0)
    if upload_type not in (0, 1, "0", "1"):
        raise business(emu, E_PARAM_VALIDATION, "Param validation fail. uploadType must be 0 or 1")
    return name, source, int(upload_type)


def check_type(emu: HuaweiEmulator, name: str) -> None:
    ext = name.rsplit(".", 1)[1].lower() if "." in name else ""
    if ext not in emu.config.file_types:
        raise business(
            emu,
            E_TYPE,
            f"The accessory file type '{ext}' is not allowed. "
            f"Allowed types: {','.join(sorted(emu.config.file_types))}",
        )


def size_error(emu: HuaweiEmulator) -> HttpError:
    return business(
        emu, E_SIZE, f"The accessory size exceeds the limit of {emu.config.limit_size_mb:g} MB"
    )


async def upload(request: Request) -> Response:
    try:
        emu = authorize(request)
        declared = request.headers.get("content-length", "")
        # Multipart framing is small: a body over limit + 64 KiB cannot hold an allowed file.
        if declared.isdigit() and int(declared) > emu.config.limit_size + FORM_DATA_MAX * 4 + 65536:
            raise size_error(emu)
    except HttpError:
        await drain(request)
        raise
    form = StreamingForm(
        emu.blobs,
        file_fields=frozenset({"file"}),
        max_file=emu.config.limit_size,
        max_field=FORM_DATA_MAX * 4,
    )
    try:
        try:
            await parse_multipart(request, form)
        except ValueError as exc:
            raise business(emu, E_PARAM[0], f"Failed to parse form-data: {exc}") from None
        if "form_data" in form.field_overflow:
            raise business(
                emu,
                E_PARAM_VALIDATION,
                f"Param validation fail. form_data is longer than {FORM_DATA_MAX} characters",
            )
        name, source, upload_type = parse_form_data(emu, form.fields.get("form_data"))
        files = [f for f in form.files if f.name == "file"]
        if not files:
            raise business(emu, E_PARAM_VALIDATION, "Param validation fail. file is required")
        check_type(emu, name)
        part = files[0]
        if part.writer.too_large:
            raise size_error(emu)
        if emu.config.limit_count and emu.store.count(source) >= emu.config.limit_count:
            raise business(
                emu,
                E_COUNT,
                f"The number of accessories exceeds the limit of {emu.config.limit_count}",
            )
        part.writer.close()
        accessory_id = uuid.uuid4().hex
        ctype = (
            part.content_type if part.content_type not in ("", "application/octet-stream") else ""
        )
        ctype = ctype or mimetypes.guess_type(name)[0] or "application/octet-stream"
        emu.blobs.commit(part.writer, accessory_id)
        emu.store.add(
            {
                "accessory_id": accessory_id,
                "accessory_from": source,
                "file_name": name,
                "upload_type": upload_type,
                "size": part.writer.size,
                "content_type": ctype,
                "sha256": part.writer.sha256,
                "created_at": time.time(),
            }
        )
        return json_response({"accessory_id": accessory_id})
    finally:
        form.abort()


def not_found(emu: HuaweiEmulator) -> HttpError:
    return HttpError(emu.config.not_found_status, err(E_NOT_FOUND, "The accessory does not exist"))


def stored(emu: HuaweiEmulator, accessory_id: str) -> Any:
    row = emu.store.get(accessory_id)
    if row is None:
        raise not_found(emu)
    return row


def file_response(request: Request, emu: HuaweiEmulator, row: Any) -> Response:
    headers = {
        "Content-Type": content_type_header(row["content_type"]),
        "Content-Length": str(row["size"]),
        "Content-Disposition": disposition(row["file_name"]),
        "Last-Modified": http_date(row["created_at"]),
    }
    return FileStream(
        200,
        headers,
        emu.blobs.path(row["accessory_id"]),
        0,
        row["size"],
        None,  # type: ignore[return-value]
        emu.config.chunk_size,
        request.method == "HEAD",
    )


async def download(request: Request) -> Response:
    emu = authorize(request)
    accessory_id = request.path_params["accessory_id"]
    if "," in accessory_id:
        raise business(
            emu,
            E_PARAM_VALIDATION,
            "Param validation fail. The emulator serves one accessory_id per request",
        )
    return file_response(request, emu, stored(emu, accessory_id))


async def access_urls(request: Request) -> Response:
    emu = authorize(request)
    ids = [i for i in request.query_params.get("accessory_ids", "").split(",") if i]
    if not 1 <= len(ids) <= 100:
        raise business(
            emu, E_PARAM_VALIDATION, "Param validation fail. accessory_ids must list 1 to 100 ids"
        )
    expires = int(time.time()) + URL_LIFETIME
    urls = []
    for accessory_id in ids:
        if emu.store.get(accessory_id) is None:
            continue  # unknown ids are left out
        sig = emu.sign(accessory_id, expires)
        urls.append(
            {
                "accessory_id": accessory_id,
                "accessory_url": (
                    f"{request_base(request)}{OBS_PREFIX}{quote(accessory_id, safe='')}"
                    f"?Expires={expires}&Signature={sig}"
                ),
            }
        )
    return json_response({"accessory_urls": urls})


async def signed_download(request: Request) -> Response:
    """An access URL: no token, the signature and expiry are the credential."""
    emu = emu_of(request)
    accessory_id = request.path_params["accessory_id"]
    try:
        expires = int(request.query_params.get("Expires", ""))
    except ValueError:
        expires = 0
    sig = request.query_params.get("Signature", "")
    if expires < time.time() or not hmac.compare_digest(sig, emu.sign(accessory_id, expires)):
        raise HttpError(
            403,
            {
                "error_code": "AccessDenied",
                "error_msg": "Request has expired or the signature does not match",
            },
        )
    return file_response(request, emu, stored(emu, accessory_id))


async def delete(request: Request) -> Response:
    emu = authorize(request)
    accessory_id = request.path_params["accessory_id"]
    if not emu.store.delete(accessory_id):
        raise not_found(emu)
    emu.blobs.delete(accessory_id)
    return json_response({"error_code": "", "error_msg": ""})


async def no_api(request: Request) -> Response:
    authorize(request)
    raise HttpError(
        404, err(E_NO_API, "The API does not exist or has not been published in the environment")
    )


async def fallback(request: Request) -> Response:
    await drain(request)
    path = request.url.path
    if path.startswith("/v2/servicerequest/"):
        authorize(request)
        if emu_of(request).stats.known(path):
            raise HttpError(405, err(E_PARAM[0], "Method not allowed"))
    raise HttpError(
        404, err(E_NO_API, "The API does not exist or has not been published in the environment")
    )


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    code = {401: "OSM.0002", 403: "OSM.0003"}.get(exc.status, "OSM.0001")
    return json_response(err(code, exc.message), exc.status, exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    return json_response(err("OSM.0004", "Internal Server Error"), 500)


def fault_body(status: int) -> bytes:
    if status == 429:
        body = err("APIGW.0308", "The throttling threshold has been reached")
    else:
        body = err("OSM.0004" if status >= 500 else "OSM.0001", "Injected by the emulator")
    return json.dumps(body).encode()


def build_app(emu: HuaweiEmulator) -> Any:
    p = "/v2/servicerequest"
    limits_routes = (
        [Route(f"{p}/accessorys/limits", localized(limits), methods=["GET"])]
        if emu.config.limits_api
        else [Route(f"{p}/accessorys/limits", no_api, methods=["GET"])]
    )
    routes = [
        Route(f"{p}/accessorys", localized(upload), methods=["POST"]),
        *limits_routes,
        Route(f"{p}/accessorys/access-urls", localized(access_urls), methods=["GET"]),
        Route(f"{p}/accessorys/{{accessory_id}}", localized(download), methods=["GET"]),
        Route(f"{p}/accessorys/{{accessory_id}}", localized(delete), methods=["DELETE"]),
        Route(f"{OBS_PREFIX}{{accessory_id}}", signed_download, methods=["GET"]),
        *control_routes(),
        Route(
            "/{path:path}",
            fallback,
            methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        ),
    ]
    return kind_app(emu, routes, api_error, server_error, fault_body)
