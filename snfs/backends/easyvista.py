"""EasyVista Service Manager: documents attached to tickets (REST API `/api/v1/{account}`).

One table, `requests`; its records are ticket identifiers (`rfc_number`: any string, e.g.
`I161026_000005`, escaped into a directory name as file names are, see `snfs.names`); its files
are the ticket's documents. Document 004 ("Attach a document to a ticket") gives one call; the
others are ASSUMED, from the vendor's other public pages, and a server without one gives a clear
error, never a silent duplicate:

- create: `POST /requests/{rfc}/documents` (documented): form-data, key `documents` holding
          `[{"filename","filedata"}]` with the Base64 produced while streaming from the file
          (never the whole file in memory; Content-Length computed up front), and key
          `description` when the mount option `easyvista_description` gives one. The 201 answer
          names only the ticket, so the new DOCUMENT_ID is found by listing before and after:
          the one new id (or, if other clients added documents to the same ticket meanwhile,
          the new one with this name and size; two concurrent uploads of the same name and size
          to one ticket cannot be told apart). Without the list call nothing is sent
          (Unsupported, EOPNOTSUPP): an upload whose document cannot be named is not stored.
- list:   `GET /requests/{rfc}/documents` (assumed; "View the URLs for ticket attachments")
          gives only `DOCUMENT_ID`s and links. Each document not seen before costs ONE more
          request: its download is opened to read the name (Content-Disposition), size
          (Content-Length), type and date from the headers, then closed. Documents never
          change, so that is cached per DOCUMENT_ID for the process. 405 → Unsupported.
- read:   `GET /requests/{rfc}/documents/{document_id}` (assumed; "Download a ticket
          attachment"; sequential, no Range).
- delete: `DELETE /requests/{rfc}/documents/{document_id}` (assumed; "Delete a ticket
          attachment", 2023.1, path not shown). `check()` asks once with a document that cannot
          exist: a 405 or 501 there switches the capability off before any write, so `unlink`
          and overwriting a document give EPERM instead of leaving the old one next to the new.
- `check()`, `record_exists`: `GET /requests/{rfc}` (assumed).
- rename, discover: not offered.

File ids are `<rfc>.<document_id>`, each made file-name safe (see `snfs.backends.id_part`).
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import mimetypes
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import trio

from snfs import names
from snfs.backend import Backend, Capabilities, RemoteFile
from snfs.backends import from_id_part, id_part
from snfs.backends.common import check_url
from snfs.backends.single_table import FileBody, SingleTableBackend
from snfs.credentials import build_auth
from snfs.errors import ConfigError, InvalidInput, NotFound, ServerError, SnfsError, Unsupported
from snfs.http import HttpStats, SendState, upload_once
from snfs.option_schema import STR, Option
from snfs.registry import System

if TYPE_CHECKING:
    from snfs.options import MountOptions

log = logging.getLogger("snfs.backends.easyvista")

TABLE = "requests"
# Any ticket identifier (the document: "rfc_number: string"), as a directory name shows it.
RFC_RE = re.compile(r"^(?!\.\.?$)[^/\x00]{1,255}$")
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
RAW_CHUNK = 3 * 88 * 1024  # a multiple of 3: Base64 of each chunk joins cleanly
KINDS = ("list", "meta", "file", "upload", "delete", "table")
PROBE_RFC = "I000000_000000"  # check(): a ticket that does not exist (404 = authenticated)
PROBE_DOC = "0_snfs_probe"  # check(): a document that cannot exist (DELETE: 404 = offered)
NOT_OFFERED = (405, 501)  # a server without an (assumed) endpoint
NO_LIST = (
    "this server does not list a ticket's documents (a call document 004 does not give); "
    "without it a new document cannot be named, so nothing is sent"
)


@dataclass
class _Doc:
    file_name: str
    size: int
    content_type: str
    created_on: datetime
    href: str = ""
    sha256: str = ""


def _b64_len(n: int) -> int:
    return 4 * ((n + 2) // 3)


def _q(rfc: str) -> str:
    return quote(rfc, safe="")


def _rfc(record: str) -> str:
    """The ticket identifier a `/requests/<record>/` directory stands for."""
    return names.decode(record)


_EXT_VALUE = re.compile(r"filename\*\s*=\s*([A-Za-z0-9_-]*)'[^']*'([^;\s]+)", re.I)
_QUOTED = re.compile(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.I)
_TOKEN = re.compile(r"filename\s*=\s*([^;\s\"]+)", re.I)


def _file_name_of(resp: httpx.Response, fallback: str) -> str:
    """The name in Content-Disposition: `filename*` (RFC 5987) first, then `filename`."""
    cd = resp.headers.get("content-disposition") or ""
    m = _EXT_VALUE.search(cd)
    if m:
        try:
            name = unquote(m.group(2), encoding=m.group(1) or "utf-8", errors="strict")
            if name:
                return name
        except (LookupError, UnicodeDecodeError):
            pass
    m = _QUOTED.search(cd)
    if m and m.group(1):
        return re.sub(r"\\(.)", r"\1", m.group(1))
    m = _TOKEN.search(cd)
    return m.group(1) if m else fallback


def _time_of(resp: httpx.Response) -> datetime:
    value = resp.headers.get("last-modified")
    if value:
        try:
            return email.utils.parsedate_to_datetime(value).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)


class EasyVistaBackend(SingleTableBackend):
    name = "easyvista"
    system = "EasyVista"
    table = TABLE
    record_re = RFC_RE
    record_word = "ticket number"
    no_list = "EasyVista: the API cannot list a table's tickets (no discover)"
    no_rename = "EasyVista documents cannot be renamed"

    def __init__(
        self,
        base_url: str,
        account: str,
        auth: httpx.Auth,
        *,
        description: str = "",
        verify: bool | str = True,
        timeout: float = 30,
        max_in_flight: int = 8,
        **retry: Any,
    ) -> None:
        """`base_url` is the server (`https://{your_server}`); `account` the EasyVista account
        (`/api/v1/{account}`); `auth` e.g. `snfs.auth.BasicAuth`; `description` the
        `description` sent with every document (none when empty). `retry` may set
        `retry_attempts`, `retry_total_seconds`, `retry_base_delay`, `retry_max_delay`."""
        if not isinstance(account, str) or not ACCOUNT_RE.match(account):
            raise InvalidInput(f"invalid EasyVista account {account!r}")
        super().__init__(
            base_url,
            f"/api/v1/{quote(account, safe='')}",
            auth,
            kinds=KINDS,
            verify=verify,
            timeout=timeout,
            max_in_flight=max_in_flight,
            **retry,
        )
        self.account = account
        self.description = description
        self._docs: dict[tuple[str, str], _Doc] = {}
        self._delete_supported: bool | None = None
        self._ticket_get: bool | None = None  # GET /requests/{rfc} (assumed) offered

    def __repr__(self) -> str:
        return f"EasyVistaBackend({self.base_url!r}, account={self.account!r})"

    def capabilities(self, table: str) -> Capabilities:
        return Capabilities(
            list=True,
            read=True,
            create=True,
            delete=self._delete_supported is not False,
            rename=False,
            discover=False,
        )

    async def check(self) -> None:
        """GET of a ticket that cannot exist: 404 proves the credentials and the REST right.
        Then a DELETE of a document that cannot exist: whether this server deletes at all
        (the endpoint is assumed), known before any overwrite relies on it."""
        resp = await self.core.send(
            "table",
            "GET",
            f"/requests/{PROBE_RFC}",
            allow=(404, *NOT_OFFERED),
            attempts=3,
            log_failure=False,
        )  # the caller reports it
        if resp.status_code in NOT_OFFERED:
            self._ticket_get = False
            log.info(
                "GET /requests/{rfc}: %s: tickets are checked by their documents list",
                resp.status_code,
            )
        path = f"/requests/{PROBE_RFC}/documents/{PROBE_DOC}"
        resp = await self.core.send(
            "delete", "DELETE", path, allow=(404, *NOT_OFFERED), attempts=3, log_failure=False
        )
        if resp.status_code in NOT_OFFERED:
            self._delete_supported = False
            log.info(
                "DELETE %s: %s: this server cannot delete documents; unlink and overwrite "
                "give EPERM",
                path,
                resp.status_code,
            )

    # -- namespace -------------------------------------------------------------------------------

    async def record_exists(self, table: str, record: str) -> bool:
        if not self.valid_record_name(table, record):
            return False
        rfc = _rfc(record)
        if self._ticket_get is not False:
            resp = await self.core.send(
                "table", "GET", f"/requests/{_q(rfc)}", allow=(404, *NOT_OFFERED)
            )
            if resp.status_code not in NOT_OFFERED:
                return resp.is_success
            self._ticket_get = False
        try:  # a server without the ticket call: its documents list says whether it exists
            await self._document_ids(rfc)
        except NotFound:
            return False
        return True

    async def _document_ids(self, rfc: str) -> list[tuple[str, str]]:
        """[(DOCUMENT_ID, HREF)] of a ticket, in the server's order; NotFound for no ticket,
        Unsupported for a server without this (assumed) call."""
        path = f"/requests/{_q(rfc)}/documents"
        resp = await self.core.send("list", "GET", path, allow=(404, *NOT_OFFERED))
        if resp.status_code in NOT_OFFERED:
            raise self.core.failed(
                Unsupported(
                    f"GET {path}: {resp.status_code}: {NO_LIST}",
                    status=resp.status_code,
                    instance_message=NO_LIST,
                    method="GET",
                    path=path,
                )
            )
        if resp.status_code == 404:
            raise self.core.failed(self.core.map_error(resp, "list", "GET", path))
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self.core.failed(
                ServerError(
                    f"GET {path}: {resp.status_code} answer is not a JSON object",
                    status=resp.status_code,
                    method="GET",
                    path=path,
                )
            )
        docs = next((body[k] for k in body if k.lower() == "documents"), None) or []
        out = []
        for d in docs if isinstance(docs, list) else []:
            if isinstance(d, dict):
                doc_id = d.get("DOCUMENT_ID") or d.get("document_id")
                if doc_id not in (None, ""):
                    out.append((str(doc_id), str(d.get("HREF") or "")))
        return out

    async def _learn(self, rfc: str, doc_id: str, href: str) -> _Doc | None:
        """Name, size, type and date of a document from its download's headers (then closed);
        None when it is gone."""
        key = (rfc, doc_id)
        if key in self._docs:
            return self._docs[key]
        path = f"/requests/{_q(rfc)}/documents/{quote(doc_id, safe='')}"
        async with self.core.open("meta", path, allow=(404,)) as resp:
            if resp.status_code == 404:
                return None
            try:
                size = int(resp.headers["content-length"])
            except (KeyError, ValueError):  # chunked: count it (once; cached afterwards)
                size = 0
                async for chunk in resp.aiter_raw():
                    size += len(chunk)
            ctype = resp.headers.get("content-type", "").split(";")[0].strip()
            doc = _Doc(
                _file_name_of(resp, doc_id),
                size,
                ctype or "application/octet-stream",
                _time_of(resp),
                href,
            )
        self._docs[key] = doc
        return doc

    def _attachment(self, rfc: str, doc_id: str, doc: _Doc) -> RemoteFile:
        file_id = f"{id_part(rfc)}.{id_part(doc_id)}"
        return RemoteFile(
            sys_id=file_id,
            table_name=TABLE,
            table_sys_id=names.encode(rfc),
            file_name=doc.file_name,
            size_bytes=doc.size,
            content_type=doc.content_type,
            created_on=doc.created_on,
            updated_on=doc.created_on,
            created_by="",
            hash=doc.sha256,
            download_link=f"{self.core.base}/requests/{_q(rfc)}/documents/{quote(doc_id, safe='')}",
            state="available",
            extra={"document_id": doc_id, "href": doc.href},
        )

    async def list_record(self, table: str, record: str) -> list[RemoteFile]:
        """The ticket's documents: one request, plus one per document not seen before."""
        self._check(table, record)
        rfc = _rfc(record)
        ids = await self._document_ids(rfc)
        await self._learn_all(rfc, ids)
        return [
            self._attachment(rfc, d, self._docs[(rfc, d)]) for d, _ in ids if (rfc, d) in self._docs
        ]

    async def _learn_all(self, rfc: str, ids: list[tuple[str, str]]) -> None:
        todo = [(d, h) for d, h in ids if (rfc, d) not in self._docs]
        if not todo:
            return
        errors: list[SnfsError] = []

        async def one(doc_id: str, href: str) -> None:
            try:
                await self._learn(rfc, doc_id, href)
            except SnfsError as e:
                errors.append(e)

        async with trio.open_nursery() as nursery:  # bounded by the core's semaphore
            for doc_id, href in todo:
                nursery.start_soon(one, doc_id, href)
        if errors:
            raise errors[0]

    # -- content ---------------------------------------------------------------------------------

    def _parse_file_id(self, file_id: str) -> tuple[str, str]:
        head, sep, part = file_id.partition(".") if isinstance(file_id, str) else ("", "", "")
        try:
            rfc, doc_id = from_id_part(head), from_id_part(part)
        except (ValueError, UnicodeDecodeError):
            rfc = doc_id = ""
        if not sep or not rfc or not doc_id:
            raise InvalidInput(f"invalid EasyVista file id {file_id!r}")
        return rfc, doc_id

    def _file_location(self, file_id: str) -> tuple[str, int | None]:
        rfc, doc_id = self._parse_file_id(file_id)
        doc = self._docs.get((rfc, doc_id))
        return f"/requests/{_q(rfc)}/documents/{quote(doc_id, safe='')}", doc.size if doc else None

    async def upload(
        self,
        table: str,
        record: str,
        file_name: str,
        source: Path,
        *,
        size: int,
        replaces: Collection[str] = (),
    ) -> RemoteFile:  # `replaces`: checked by the core
        """Attach one document: form-data (document 004), the Base64 streamed inside the
        `documents` part. Retried only when the server provably did not act; when in doubt the
        ticket's new documents are looked at (name and size) before sending again."""
        self._check_upload(table, record, file_name, size)
        rfc = _rfc(record)
        path = f"/requests/{_q(rfc)}/documents"
        before = {d for d, _ in await self._document_ids(rfc)}  # Unsupported: nothing sent
        head, tail, ctype = _form_frame(file_name, self.description)
        headers = {
            "Content-Type": ctype,
            "Content-Length": str(len(head) + _b64_len(size) + len(tail)),
        }
        bodies, make_body = self._attempt_bodies(
            lambda: _B64Body(self.stats, Path(source), size, head, tail)
        )

        async def send() -> str:
            await self.core.send(
                "upload",
                "POST",
                path,
                body=make_body,
                headers=headers,
                idempotent=False,
                log_failure=False,
            )
            return ""  # stored: which document it is, is found below

        async def look(last: FileBody) -> str | None:
            return await self._new_document(rfc, before, file_name, size, required=False)

        what = f"{file_name} to {rfc}"
        found: str | None = await upload_once(self.core, send, bodies, what, look)
        if not found:
            found = await self._new_document(rfc, before, file_name, size, required=True)
            assert found is not None
        return self._remember_hash(rfc, found, bodies[-1].sha256)

    def _remember_hash(self, rfc: str, doc_id: str, sha256: str) -> RemoteFile:
        doc = self._docs[(rfc, doc_id)]
        doc.sha256 = sha256
        return self._attachment(rfc, doc_id, doc)

    async def _new_document(
        self, rfc: str, before: set[str], file_name: str, size: int, *, required: bool
    ) -> str | None:
        """The DOCUMENT_ID an upload just created: the one new id (its name, size and type are
        what was sent: nothing more to ask, so this works on a server without downloads), or
        the new one with this name and size (the last, if several)."""
        ids = [(d, h) for d, h in await self._document_ids(rfc) if d not in before]
        if len(ids) == 1 and required:
            doc_id, href = ids[0]
            ctype = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
            self._docs.setdefault(
                (rfc, doc_id), _Doc(file_name, size, ctype, datetime.now(UTC), href)
            )
            return doc_id
        await self._learn_all(rfc, ids)
        hits = [
            d
            for d, _ in ids
            if (rfc, d) in self._docs
            and self._docs[(rfc, d)].file_name == file_name
            and self._docs[(rfc, d)].size == size
        ]
        if hits:
            return hits[-1]
        if len(ids) == 1 and required and (rfc, ids[0][0]) in self._docs:
            return ids[0][0]
        if not required:
            return None
        path = f"/requests/{_q(rfc)}/documents"
        raise self.core.failed(
            ServerError(
                f"POST {path}: stored, but the new document cannot be identified ({len(ids)} new)",
                method="POST",
                path=path,
            )
        )

    async def delete(self, file_id: str, *, missing_ok: bool = False) -> None:
        rfc, doc_id = self._parse_file_id(file_id)
        path = f"/requests/{_q(rfc)}/documents/{quote(doc_id, safe='')}"
        if self._delete_supported is False:
            raise Unsupported(
                f"DELETE {path}: this EasyVista server cannot delete documents",
                method="DELETE",
                path=path,
            )
        state = SendState()
        resp = await self.core.send(
            "delete", "DELETE", path, allow=(404, *NOT_OFFERED), state=state
        )
        if resp.status_code in NOT_OFFERED:
            self._delete_supported = False
            raise self.core.failed(self.core.map_error(resp, "delete", "DELETE", path))
        self._delete_supported = True
        self._docs.pop((rfc, doc_id), None)
        # A 404 after a retried DELETE: the first attempt may have deleted it.
        if resp.status_code == 404 and not missing_ok and state.attempts == 1:
            raise self.core.failed(
                NotFound(
                    f"DELETE {path}: 404 document not found", status=404, method="DELETE", path=path
                )
            )

    async def find_uploaded(
        self,
        table: str,
        record: str,
        file_name: str,
        sha256: str,
        size: int,
        since: datetime,
        *,
        exclude: frozenset[str] = frozenset(),
    ) -> RemoteFile | None:
        """A document of this ticket with this name, size and a known matching hash. The API
        gives no hash and no creation time worth trusting (`created_on` is "now" without a
        Last-Modified header), so a document is ours only if this process hashed it; after a
        crash that is never the case and the file is sent again: never delete on a guess."""
        atts = await self.list_record(table, record)
        hits = [
            a
            for a in atts
            if a.sys_id not in exclude
            and a.file_name == file_name
            and a.size_bytes == size
            and a.hash == sha256
            and a.created_on.timestamp() >= since.timestamp()
        ]
        return hits[-1] if hits else None


def _form_frame(file_name: str, description: str) -> tuple[bytes, bytes, str]:
    """(head, tail, Content-Type) of the form-data body around the Base64 of one file: the
    `description` part when there is one, then `documents` = `[{"filename","filedata"}]`."""
    boundary = "snfs-" + secrets.token_hex(16)
    b = boundary.encode()
    head = b""
    if description:
        head += (
            b"--" + b + b'\r\nContent-Disposition: form-data; name="description"\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + description.encode() + b"\r\n"
        )
    head += (
        b"--" + b + b'\r\nContent-Disposition: form-data; name="documents"\r\n'
        b"Content-Type: application/json\r\n\r\n"
        b'[{"filename":' + json.dumps(file_name).encode() + b',"filedata":"'
    )
    tail = b'"}]\r\n--' + b + b"--\r\n"
    return head, tail, f"multipart/form-data; boundary={boundary}"


class _B64Body(FileBody):
    """One attempt's JSON body: head, Base64 of the file (streamed, in chunks of 3·k bytes so
    the pieces join), tail. Hashes the raw content on the way."""

    chunk_size = RAW_CHUNK

    def __init__(self, stats: HttpStats, path: Path, size: int, head: bytes, tail: bytes) -> None:
        super().__init__(stats, path, size, head, tail)
        self._carry = b""  # the last 0-2 bytes, encoded with the next chunk

    def encode(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        cut = len(data) - len(data) % 3
        self._carry = data[cut:]
        return base64.b64encode(data[:cut])

    def finish(self) -> bytes:
        return base64.b64encode(self._carry)


def build(o: MountOptions, url: str) -> Backend:
    """`https://SERVER/api/v1/ACCOUNT` with Basic (or OAuth) credentials."""
    if "://" not in url:
        raise ConfigError(f"easyvista: give the full URL of the server, not {url!r}")
    base = check_url(url, allow_insecure_http=o.allow_insecure_http)
    parts = urlsplit(base)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 3 or segments[-3:-1] != ["api", "v1"]:
        raise ConfigError(
            "easyvista: the URL must end in /api/v1/<account>, e.g. "
            "easyvista+https://ev.example.com/api/v1/50004"
        )
    return EasyVistaBackend(
        f"{parts.scheme}://{parts.netloc}",
        segments[-1],
        build_auth(o, base),
        description=o.backend_options.get("easyvista_description") or "",
        verify=str(o.ca_bundle) if o.ca_bundle else True,
        timeout=o.timeout,
        max_in_flight=o.max_in_flight,
    )


SYSTEM = System(
    name="easyvista",
    summary="EasyVista Service Manager: documents of tickets",
    url="easyvista+https://SERVER/api/v1/ACCOUNT",
    capabilities=Capabilities(
        list=True, read=True, create=True, delete=True, rename=False, discover=False
    ),
    build=build,
    options=(
        Option(
            "easyvista_description",
            STR,
            "",
            "the `description` sent with every document attached to an EasyVista ticket",
            metavar="TEXT",
        ),
    ),
)
