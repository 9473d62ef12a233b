"""`snfs emulator --kind easyvista`: EasyVista Service Manager's REST API for ticket documents.

Under `/api/v1/{account}/` (any account, or only `--account NAME`), HTTP Basic
(`--user NAME:PASSWORD[:norest]`; `admin:admin` always exists). Facts from the public doc
(wiki.easyvista.com, Service Manager REST API); the rest are documented choices
(docs/EMULATOR.md, "EasyVista"):

- `POST /requests` creates a ticket (any JSON body; a test may choose its identifier with
  `"rfc_number"`, any string, as the document types it) → 201
  `{"HREF": ".../requests/I<yymmdd>_<6 digits>"}`
- `GET /requests/{rfc_number}` → 200 small JSON, 404 `{"error":"Resource not found"}` (not in
  document 004; `--no-ticket` makes it 405)
- `POST /requests/{rfc_number}/documents` → 201 `{"HREF": ".../requests/<rfc>"}`; as document
  004 says, form-data: key `documents` holding `[{"filedata":"<base64>","filename":"x.pdf"}]`,
  optional key `description`. Other body forms (a JSON body, raw file parts named `documents`)
  are refused (400) unless `--any-body-form`.
- `GET /requests/{rfc_number}/documents` (not in document 004; `--no-list` makes it 405) →
  `{"PARENT_HREF","HREF","Documents":[{"HREF","PARENT_HREF","DOCUMENT_ID"}]}`
- `GET /requests/{rfc_number}/documents/{document_id}[?encoding=base64]` → the file (not in
  document 004; `--no-download` makes it 405)
- `DELETE /requests/{rfc_number}/documents/{document_id}` → 204 (`--delete-status 200`; the
  path is uncertain: `--no-delete` makes it 405)
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
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
    is_multipart,
    json_response,
    kind_app,
    parse_multipart,
    read_capped,
    request_base,
)
from snfs.emulator.switches import switch

PREFIX = re.compile(r"^/api/v1/[^/]+(?=/)")
_ID = r"[^/]+"
ROUTES = compile_routes(
    [
        ("POST", "/requests", "/requests"),
        ("GET", "/requests/{rfc_number}", f"/requests/{_ID}"),
        ("POST", "/requests/{rfc_number}/documents", f"/requests/{_ID}/documents"),
        ("GET", "/requests/{rfc_number}/documents", f"/requests/{_ID}/documents"),
        (
            "GET",
            "/requests/{rfc_number}/documents/{document_id}",
            f"/requests/{_ID}/documents/{_ID}",
        ),
        (
            "DELETE",
            "/requests/{rfc_number}/documents/{document_id}",
            f"/requests/{_ID}/documents/{_ID}",
        ),
    ]
)
INVALID_LOGIN = {"error": "Invalid Login / Password"}
NOT_FOUND = {"error": "Resource not found"}
NO_REST = {"error": "The user does not have the REST API right enabled in their profile"}
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
B64_CHUNK = 3 * 256 * 1024


GROUP = "easyvista (--kind easyvista)"


@dataclass
class EVConfig:
    """Fields with `switch(...)` are `snfs emulator --kind easyvista` switches (declared once)."""

    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path = Path(".")
    users: list[User] = field(default_factory=list)
    account: str | None = switch(  # None: any account name
        None, "the only account name accepted", metavar="NAME", group=GROUP
    )
    max_body_mb: float = switch(
        64.0,
        "request body cap (413 above)",
        flag="--max-body",
        type=float,
        metavar="MB",
        group=GROUP,
    )
    delete: bool = switch(
        True,
        "no DELETE of a document (the path is uncertain): 405",
        flag="--no-delete",
        const=False,
        group=GROUP,
    )
    delete_status: int = switch(
        204, "status of a successful DELETE", type=int, choices=(200, 204), group=GROUP
    )
    list_documents: bool = switch(  # GET /requests/{rfc}/documents (not in document 004)
        True,
        "no GET of a ticket's documents (not in the upload document): 405",
        flag="--no-list",
        const=False,
        group=GROUP,
    )
    download: bool = switch(  # GET /requests/{rfc}/documents/{id} (not in document 004)
        True,
        "no GET of a document (not in the upload document): 405",
        flag="--no-download",
        const=False,
        group=GROUP,
    )
    ticket_get: bool = switch(  # GET /requests/{rfc} (not in document 004)
        True,
        "no GET of a ticket (not in the upload document): 405",
        flag="--no-ticket",
        const=False,
        group=GROUP,
    )
    any_body_form: bool = switch(  # also a JSON body and raw file parts (not in document 004)
        False,
        "also take a JSON body and raw file parts (document 004: form-data)",
        const=True,
        group=GROUP,
    )
    chunk_size: int = 1024 * 1024

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def parse_ev_user(spec: str) -> User:
    """`NAME:PASSWORD[:norest]`: a `norest` user authenticates but lacks the REST API right."""
    name, sep, rest = spec.partition(":")
    password, _, flag = rest.partition(":")
    if not sep or not name or flag not in ("", "norest"):
        raise ValueError(f"bad user {spec!r}: expected NAME:PASSWORD[:norest]")
    roles = {"norest"} if flag else {"rest"}
    if name == "admin":
        roles.add("admin")  # the test controls need the admin user
    return User(name, password, frozenset(roles))


SCHEMA = """
CREATE TABLE IF NOT EXISTS ev_counters (name TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ev_requests (
    account TEXT NOT NULL, rfc_number TEXT NOT NULL, request_id INTEGER NOT NULL,
    created_on TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (account, rfc_number));
CREATE TABLE IF NOT EXISTS ev_documents (
    document_id TEXT PRIMARY KEY, account TEXT NOT NULL, rfc_number TEXT NOT NULL,
    seq INTEGER NOT NULL, file_name TEXT NOT NULL, size INTEGER NOT NULL,
    content_type TEXT NOT NULL, sha256 TEXT NOT NULL, description TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ev_doc_request ON ev_documents (account, rfc_number, seq);
"""


class EVStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def wipe(self) -> None:
        self.conn.executescript(
            "DELETE FROM ev_counters; DELETE FROM ev_requests; DELETE FROM ev_documents;"
        )

    def next(self, name: str, start: int) -> int:
        self.conn.execute(
            "INSERT OR IGNORE INTO ev_counters (name, next) VALUES (?, ?)", (name, start)
        )
        (n,) = self.conn.execute(
            "UPDATE ev_counters SET next = next + 1 WHERE name = ? RETURNING next - 1", (name,)
        ).fetchone()
        return int(n)

    def new_request(self, account: str, data: Any, rfc: str | None = None) -> dict[str, Any]:
        now = datetime.now(UTC)
        day = now.strftime("%y%m%d")
        rfc = rfc or f"I{day}_{self.next('rfc' + day, 1):06d}"
        request_id = self.next("request_id", 1001)
        created = now.strftime("%Y-%m-%d %H:%M:%S")
        self.conn.execute(
            "INSERT INTO ev_requests VALUES (?, ?, ?, ?, ?)",
            (account, rfc, request_id, created, json.dumps(data)),
        )
        return {"rfc_number": rfc, "request_id": request_id, "created_on": created}

    def get_request(self, account: str, rfc: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT * FROM ev_requests WHERE account = ? AND rfc_number = ?", (account, rfc)
        ).fetchone()

    def new_document_id(self) -> str:
        # Shape of the doc's example "40000_9ae8...": a number, "_", hex.
        return f"{self.next('document', 40000)}_{uuid.uuid4().hex[:16]}"

    def add_document(self, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        self.conn.execute(
            f"INSERT INTO ev_documents ({cols}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )

    def documents(self, account: str, rfc: str) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM ev_documents WHERE account = ? AND rfc_number = ? ORDER BY seq",
            (account, rfc),
        ).fetchall()

    def document(
        self, account: str, document_id: str, rfc: str | None = None
    ) -> sqlite3.Row | None:
        row = self.conn.execute(
            "SELECT * FROM ev_documents WHERE account = ? AND document_id = ?",
            (account, document_id),
        ).fetchone()
        if row is None or (rfc is not None and row["rfc_number"] != rfc):
            return None
        return row

    def delete_document(self, document_id: str) -> None:
        self.conn.execute("DELETE FROM ev_documents WHERE document_id = ?", (document_id,))


class EasyVistaEmulator(KindEmulator):
    kind = "easyvista"
    config: EVConfig
    store: EVStore

    def __init__(self, config: EVConfig) -> None:
        users = {"admin": parse_ev_user("admin:admin")}
        users.update({u.name: u for u in config.users})
        super().__init__(config, EVStore, Auth(users, {}), ROUTES, PREFIX)


# -- helpers -------------------------------------------------------------------------------------


def emu_of(request: Request) -> EasyVistaEmulator:
    return request.app.state.emu


def api_base(request: Request, account: str) -> str:
    return f"{request_base(request)}/api/v1/{quote(account, safe='')}"


def authorize(request: Request) -> tuple[EasyVistaEmulator, str]:
    """The emulator and account of a request with a valid user that has the REST API right."""
    emu = emu_of(request)
    account = request.path_params.get("account", "")
    if emu.config.account is not None and account != emu.config.account:
        raise HttpError(401, INVALID_LOGIN)  # doc: 401 also for an incorrect account
    user = emu.auth.authenticate(request.headers.get("authorization"))
    if user is None:
        raise HttpError(401, INVALID_LOGIN, {"WWW-Authenticate": 'Basic realm="EasyVista"'})
    if "norest" in user.roles:
        raise HttpError(403, NO_REST)
    return emu, account


def found(row: Any) -> Any:
    """`row`, or EasyVista's 404 when there is none."""
    if row is None:
        raise HttpError(404, NOT_FOUND)
    return row


# -- endpoints -----------------------------------------------------------------------------------


async def create_request(request: Request) -> Response:
    try:
        emu, account = authorize(request)
    except HttpError:
        await drain(request)
        raise
    raw = await read_capped(request, emu.config.max_body, lambda: too_large(emu))
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise HttpError(400, {"error": "Invalid JSON body"}) from None
    chosen = data.get("rfc_number") if isinstance(data, dict) else None
    if chosen is not None and (not isinstance(chosen, str) or not chosen):
        raise HttpError(400, {"error": "rfc_number must be a non-empty string"})
    if chosen is not None and emu.store.get_request(account, chosen) is not None:
        raise HttpError(400, {"error": f"request {chosen} exists"})
    row = emu.store.new_request(account, data, chosen)
    return json_response(
        {"HREF": f"{api_base(request, account)}/requests/{row['rfc_number']}"}, 201
    )


async def get_request(request: Request) -> Response:
    emu, account = authorize(request)
    rfc = request.path_params["rfc_number"]
    row = found(emu.store.get_request(account, rfc))
    href = f"{api_base(request, account)}/requests/{rfc}"
    return json_response(
        {
            "HREF": href,
            "RFC_NUMBER": rfc,
            "REQUEST_ID": str(row["request_id"]),
            "SUBMIT_DATE_UT": row["created_on"],
            "DOCUMENTS": {"HREF": href + "/documents"},
        }
    )


def too_large(emu: EasyVistaEmulator) -> HttpError:
    return HttpError(
        413, {"error": f"Request body exceeds the maximum size of {emu.config.max_body_mb:g} MB"}
    )


def decode_documents(value: Any) -> list[tuple[str, bytes]]:
    """[(file name, content)] from the `documents` list; HttpError 400 when malformed."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise HttpError(400, {"error": "documents must be a JSON list"}) from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise HttpError(400, {"error": "documents must be a list of {filedata, filename}"})
    out = []
    for i, doc in enumerate(value):
        if not isinstance(doc, dict):
            raise HttpError(400, {"error": f"documents[{i}] must be an object"})
        name = doc.get("filename")
        if not isinstance(name, str) or not name.strip() or "\x00" in name:
            raise HttpError(400, {"error": f"documents[{i}]: missing filename"})
        data = doc.get("filedata")
        if not isinstance(data, str):
            raise HttpError(400, {"error": f"documents[{i}] ({name}): missing filedata"})
        try:
            content = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(
                400, {"error": f"documents[{i}] ({name}): filedata is not valid Base64"}
            ) from None
        out.append((name, content))
    return out


async def post_documents(request: Request) -> Response:
    try:
        emu, account = authorize(request)
        rfc = request.path_params["rfc_number"]
        found(emu.store.get_request(account, rfc))
    except HttpError:
        await drain(request)
        raise
    limit = emu.config.max_body
    docs: list[tuple[str, bytes]] = []
    description = ""
    form: StreamingForm | None = None
    try:
        if is_multipart(request):
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                await drain(request)
                raise too_large(emu)
            form = StreamingForm(emu.blobs, max_file=limit, max_field=limit)
            try:
                await parse_multipart(request, form)
            except ValueError as exc:
                raise HttpError(400, {"error": f"Invalid form-data: {exc}"}) from None
            if form.field_overflow or any(f.writer.too_large for f in form.files):
                raise too_large(emu)
            description = form.fields.get("description", "")
            if "documents" in form.fields:
                docs = decode_documents(form.fields["documents"])
            raw_files = [f for f in form.files if f.name == "documents"]
            if raw_files and not emu.config.any_body_form:
                raise HttpError(
                    400, {"error": "documents must be Base64 filedata/filename objects"}
                )
            if not docs and not raw_files:
                raise HttpError(400, {"error": "Missing mandatory parameter: documents"})
        elif not emu.config.any_body_form:
            await drain(request)
            raise HttpError(400, {"error": "documents must be sent as form-data"})
        else:
            raw = await read_capped(request, limit, lambda: too_large(emu))
            try:
                body = json.loads(raw)
            except ValueError:
                raise HttpError(400, {"error": "Invalid JSON body"}) from None
            if not isinstance(body, dict) or body.get("documents") in (None, [], ""):
                raise HttpError(400, {"error": "Missing mandatory parameter: documents"})
            description = str(body.get("description") or "")
            docs = decode_documents(body["documents"])
            raw_files = []
        now = time.time()
        for name, content in docs:
            writer = emu.blobs.writer()
            for i in range(0, len(content), 1 << 20):
                writer.write(content[i : i + (1 << 20)])
            store_document(emu, account, rfc, writer, name, "", description, now)
        for part in raw_files:
            store_document(
                emu,
                account,
                rfc,
                part.writer,
                part.file_name or "document",
                part.content_type,
                description,
                now,
            )
    finally:
        if form is not None:
            form.abort()  # no-op for the files already committed
    return json_response({"HREF": f"{api_base(request, account)}/requests/{rfc}"}, 201)


def store_document(
    emu: EasyVistaEmulator,
    account: str,
    rfc: str,
    writer: Any,
    name: str,
    content_type: str,
    description: str,
    now: float,
) -> None:
    writer.close()
    doc_id = emu.store.new_document_id()
    ctype = content_type if content_type and content_type != "application/octet-stream" else ""
    ctype = ctype or mimetypes.guess_type(name)[0] or "application/octet-stream"
    emu.blobs.commit(writer, doc_id)
    emu.store.add_document(
        {
            "document_id": doc_id,
            "account": account,
            "rfc_number": rfc,
            "seq": emu.store.next("seq", 1),
            "file_name": name,
            "size": writer.size,
            "content_type": ctype,
            "sha256": writer.sha256,
            "description": description,
            "created_at": now,
        }
    )


async def list_documents(request: Request) -> Response:
    emu, account = authorize(request)
    rfc = request.path_params["rfc_number"]
    found(emu.store.get_request(account, rfc))
    parent = f"{api_base(request, account)}/requests/{rfc}"
    docs = [
        {
            "HREF": autoconnect_href(request, account, row["document_id"]),
            "PARENT_HREF": parent,
            "DOCUMENT_ID": row["document_id"],
        }
        for row in emu.store.documents(account, rfc)
    ]
    return json_response({"PARENT_HREF": parent, "HREF": parent + "/documents", "Documents": docs})


def autoconnect_href(request: Request, account: str, doc_id: str) -> str:
    # The doc's list shows links of this shape
    # ("https://{server}/autoconnect_mail.php?...docpath=...").
    return (
        f"{request_base(request)}/autoconnect_mail.php?account={quote(account, safe='')}"
        f"&docpath={quote(doc_id, safe='')}"
    )


def file_response(request: Request, emu: EasyVistaEmulator, row: Any) -> Response:
    path = emu.blobs.path(row["document_id"])
    size = row["size"]
    headers = {
        "Content-Disposition": disposition(row["file_name"]),
        "Last-Modified": http_date(row["created_at"]),
    }
    head_only = request.method == "HEAD"
    if request.query_params.get("encoding", "").lower() == "base64":
        headers["Content-Type"] = "text/plain; charset=us-ascii"
        headers["Content-Length"] = str(4 * ((size + 2) // 3))

        async def encoded() -> Any:
            if head_only:
                return
            with open(path, "rb") as f:  # noqa: ASYNC230 - a local file, read in large pieces
                while chunk := f.read(B64_CHUNK):
                    yield base64.b64encode(chunk)

        return StreamingResponse(encoded(), headers=headers)
    headers["Content-Type"] = content_type_header(row["content_type"])
    headers["Content-Length"] = str(size)
    return FileStream(200, headers, path, 0, size, None, emu.config.chunk_size, head_only)  # type: ignore[return-value]


def addressed_document(request: Request) -> tuple[EasyVistaEmulator, str, str, Any]:
    """(emulator, account, rfc, document row) of `/requests/{rfc}/documents/{document_id}`;
    404 when the ticket or the document is missing."""
    emu, account = authorize(request)
    rfc, doc_id = request.path_params["rfc_number"], request.path_params["document_id"]
    found(emu.store.get_request(account, rfc))
    return emu, account, rfc, found(emu.store.document(account, doc_id, rfc))


async def get_document(request: Request) -> Response:
    emu, _, _, row = addressed_document(request)
    return file_response(request, emu, row)


async def autoconnect(request: Request) -> Response:
    """The document links of the list (`/autoconnect_mail.php?account=&docpath=`), Basic auth."""
    emu = emu_of(request)
    user = emu.auth.authenticate(request.headers.get("authorization"))
    if user is None:
        raise HttpError(401, INVALID_LOGIN, {"WWW-Authenticate": 'Basic realm="EasyVista"'})
    row = found(
        emu.store.document(
            request.query_params.get("account", ""), request.query_params.get("docpath", "")
        )
    )
    return file_response(request, emu, row)


async def delete_document(request: Request) -> Response:
    emu, account, rfc, row = addressed_document(request)
    doc_id = row["document_id"]
    emu.store.delete_document(doc_id)
    emu.blobs.delete(doc_id)
    if emu.config.delete_status == 200:
        return json_response({"HREF": f"{api_base(request, account)}/requests/{rfc}/documents"})
    return Response(status_code=204)


async def fallback(request: Request) -> Response:
    path = request.url.path
    if path.startswith("/api/v1/"):
        await drain(request)
        authorize_path(request)
        if emu_of(request).stats.known(path):
            raise HttpError(405, {"error": "Method not allowed"})
    raise HttpError(404, NOT_FOUND)


def authorize_path(request: Request) -> None:
    parts = request.url.path.split("/")
    request.scope.setdefault("path_params", {})["account"] = parts[3] if len(parts) > 3 else ""
    authorize(request)


async def api_error(request: Request, exc: Exception) -> Response:
    """The test controls' ApiError (401/403/400), in this system's shape."""
    assert isinstance(exc, ApiError)
    return json_response({"error": exc.message}, exc.status, exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    return json_response({"error": f"Internal server error: {type(exc).__name__}"}, 500)


def fault_body(status: int) -> bytes:
    message = "Too many requests" if status == 429 else "Injected by the emulator"
    return json.dumps({"error": message}).encode()


def build_app(emu: EasyVistaEmulator) -> Any:
    p = "/api/v1/{account}"
    routes = [
        Route(f"{p}/requests", create_request, methods=["POST"]),
        *(
            [Route(f"{p}/requests/{{rfc_number}}", get_request, methods=["GET"])]
            if emu.config.ticket_get
            else []
        ),
        Route(f"{p}/requests/{{rfc_number}}/documents", post_documents, methods=["POST"]),
        *(
            [Route(f"{p}/requests/{{rfc_number}}/documents", list_documents, methods=["GET"])]
            if emu.config.list_documents
            else []
        ),
        *(
            [
                Route(
                    f"{p}/requests/{{rfc_number}}/documents/{{document_id}}",
                    get_document,
                    methods=["GET"],
                )
            ]
            if emu.config.download
            else []
        ),
        Route("/autoconnect_mail.php", autoconnect, methods=["GET"]),
    ]
    if emu.config.delete:
        routes.append(
            Route(
                f"{p}/requests/{{rfc_number}}/documents/{{document_id}}",
                delete_document,
                methods=["DELETE"],
            )
        )
    routes += control_routes()
    routes.append(Route("/{path:path}", fallback, methods=ALL_METHODS))
    return kind_app(emu, routes, api_error, server_error, fault_body)
