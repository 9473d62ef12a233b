"""Huawei Cloud OSM: service-ticket attachments ("accessorys", API v2 `/v2/servicerequest`).

One table, `accessorys`; its records are `accessoryFrom` values (`incident` for ticket
creation, `message` for ticket messages, ...); its files are the accessories uploaded there.
Authentication is an IAM token in `X-Auth-Token` (a secret: never in repr, logs or errors).

- list:     not offered (the API has no "list accessories" call): a record directory shows only
            the files uploaded through this mount (write-only listing).
- read:     `GET /accessorys/{accessory_id}` (sequential; no Range). Assumed: not in document
            003 (the public API reference's "Downloading an attachment").
- create:   `POST /accessorys`, multipart `form_data` (JSON `{"fileName","accessoryFrom",
            "uploadType":0}`, at most 5000 characters) + `file`, streamed from the file: the one
            call document 003 gives. A name whose form_data is over 5000 characters →
            NameTooLong (ENAMETOOLONG) before sending. Where the server offers the limits call
            (`GET /accessorys/limits`, assumed: the document names "the API for querying
            attachment restrictions" but not its path; fetched once, at `check()` or the first
            upload), size and type are checked before sending: over `limit_size` → TooLarge
            (EFBIG), type not in `limit_file_type` → ExtensionRefused (EPERM). Without it the
            upload's own answer refuses; its refusals map to the same, over `limit_count` →
            LimitReached (EDQUOT), classified by `error_code` first and by words only where the
            code is not one we know.
- every request sends `X-Language` (mount option `huawei_language`, default `en-us`; the
            document's default is zh-cn), so that messages are in the language words are
            matched in.
- delete:   `DELETE /accessorys/{accessory_id}`. Assumed: not in document 003 (the public API
            reference's "Deleting an attachment").
- rename, discover: not offered. `find_uploaded` cannot look (no listing): an upload cut off
            after the whole body was sent is not sent again, and a crash mid-upload may leave a
            duplicate accessory on the server.

File ids are the accessory ids (made file-name safe by `snfs.backends.id_part`).
"""

from __future__ import annotations

import errno
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
from urllib.parse import quote

import httpx

from snfs.backend import Backend, Capabilities, RemoteFile
from snfs.backends import from_id_part, id_part
from snfs.backends.common import check_url, multipart_quote
from snfs.backends.single_table import FileBody, SingleTableBackend
from snfs.credentials import bearer_token
from snfs.errors import (
    ConfigError,
    ExtensionRefused,
    InvalidInput,
    NotFound,
    ServerError,
    SnfsError,
    TooLarge,
)
from snfs.http import HeaderToken, SendState, http_error, upload_once
from snfs.option_schema import STR, Option
from snfs.registry import System
from snfs.secrets import Secret

if TYPE_CHECKING:
    from snfs.options import MountOptions

log = logging.getLogger("snfs.backends.huawei")

TABLE = "accessorys"
RECORD_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FORM_DATA_MAX = 5000
KINDS = ("limits", "file", "upload", "delete")
LANGUAGE = "en-us"  # what we send as X-Language: the words below are English
HEADER_MAX = 32  # X-Language, X-Time-Zone: 1 to 32 characters (document 003)
CAPS = Capabilities(list=False, read=True, create=True, delete=True, rename=False, discover=False)

# The accessory codes are the emulator's (snfs/emulator/huawei.py), in the documented
# OSM.0101xxxx family: the real ones are not public, so an unknown code falls back to the
# (English, see X-Language) message words.
SIZE_CODES = {"OSM.01010101", "OSM.01010005"}
TYPE_CODES = {"OSM.01010102"}
COUNT_CODES = {"OSM.01010103"}
NOT_FOUND_CODES = {"OSM.01010104"}


class NameTooLong(InvalidInput):
    errno = errno.ENAMETOOLONG


class LimitReached(SnfsError):
    """Over the server's `limit_count` (number of accessories)."""

    errno = errno.EDQUOT


@dataclass(frozen=True)
class Limits:
    count: int | None  # limit_count (None: unknown / none)
    size_bytes: int | None  # limit_size, MB
    file_types: frozenset[str]  # limit_file_type, lower case, no dots; empty: any

    @classmethod
    def from_json(cls, body: Any) -> Limits:
        lim = body.get("accessory_limit") if isinstance(body, dict) else None
        lim = lim if isinstance(lim, dict) else {}

        def num(v: Any) -> float | None:
            try:
                x = float(str(v).strip())
            except (TypeError, ValueError):
                return None
            return x if x > 0 else None

        size = num(lim.get("limit_size"))
        count = num(lim.get("limit_count"))
        types = frozenset(
            t.strip().lstrip(".").lower()
            for t in re.split(r"[,;|\s]+", str(lim.get("limit_file_type") or ""))
            if t.strip()
        )
        return cls(int(count) if count else None, int(size * 1024 * 1024) if size else None, types)


def _error_fields(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error_code") or ""), str(body.get("error_msg") or "")


_BY_CODE: tuple[tuple[frozenset[str], type[SnfsError], bool], ...] = (
    # codes, error, for uploads only
    (frozenset(NOT_FOUND_CODES), NotFound, False),
    (frozenset(COUNT_CODES), LimitReached, True),
    (frozenset(SIZE_CODES), TooLarge, True),
    (frozenset(TYPE_CODES), ExtensionRefused, True),
)
_BY_WORDS: tuple[tuple[re.Pattern[str], type[SnfsError], bool], ...] = (
    (re.compile(r"not exist|not found"), NotFound, False),
    (re.compile(r"\bnumber\b|\bcount\b"), LimitReached, True),
    (re.compile(r"\bsize\b|too large"), TooLarge, True),
    (re.compile(r"file type|extension"), ExtensionRefused, True),
)


def _classify(code: str, msg: str, kind: str, default: type[SnfsError]) -> type[SnfsError]:
    """The error for an OSM answer: by `error_code` first; by the message's words only when
    the code is none we know (the words are English: we send `X-Language: en-us`)."""
    for codes, cls, upload_only in _BY_CODE:
        if code in codes and (kind == "upload" or not upload_only):
            return cls
    low = msg.lower()
    for words, cls, upload_only in _BY_WORDS:
        if words.search(low) and (kind == "upload" or not upload_only):
            return cls
    return default


def huawei_error(resp: httpx.Response, kind: str, method: str, path: str) -> SnfsError:
    """Map a Huawei answer (`{"error_code","error_msg"}`) to snfs.errors."""
    base = http_error(resp, kind, method, path)
    code, msg = _error_fields(resp)
    if not code and not msg:
        return base
    cls = (
        _classify(code, msg, kind, type(base))
        if resp.status_code in (200, 400, 404)
        else type(base)
    )
    err = cls(
        f"{method} {path}: {resp.status_code} {msg} ({code})".rstrip(),
        status=resp.status_code,
        instance_message=msg or code,
        method=method,
        path=path,
    )
    err.retry_after = base.retry_after
    err.error_code = code  # type: ignore[attr-defined]
    return err


class HuaweiBackend(SingleTableBackend):
    name = "huawei"
    system = "Huawei OSM"
    table = TABLE
    record_re = RECORD_RE
    record_word = "accessoryFrom"
    no_list = "Huawei OSM cannot list accessories"
    no_rename = "Huawei OSM accessories cannot be renamed"

    def __init__(
        self,
        base_url: str,
        token: str | Secret,
        *,
        language: str = LANGUAGE,
        verify: bool | str = True,
        timeout: float = 30,
        max_in_flight: int = 8,
        **retry: Any,
    ) -> None:
        """`base_url` is the OSM endpoint (`https://{endpoint}`); `token` an IAM token
        (X-Subject-Token); `language` the X-Language sent. `retry` may set `retry_attempts`,
        `retry_total_seconds`, `retry_base_delay`, `retry_max_delay`."""
        if not 1 <= len(language) <= HEADER_MAX or not language.isprintable():
            raise InvalidInput(f"X-Language must be 1 to {HEADER_MAX} characters: {language!r}")
        super().__init__(
            base_url,
            "/v2/servicerequest",
            HeaderToken("X-Auth-Token", token),
            kinds=KINDS,
            verify=verify,
            timeout=timeout,
            max_in_flight=max_in_flight,
            error_mapper=huawei_error,
            default_headers={"X-Language": language},
            **retry,
        )
        self.language = language
        self.limits: Limits | None = None
        self.limits_offered: bool | None = None  # GET /accessorys/limits (assumed) answers

    def __repr__(self) -> str:
        return f"HuaweiBackend({self.base_url!r})"

    def capabilities(self, table: str) -> Capabilities:
        return CAPS

    async def check(self) -> None:
        """GET /accessorys/limits (assumed: not in document 003), where the server has it: it
        proves the token and learns the limits uploads are pre-checked against. A server
        without it mounts all the same; its uploads' answers then refuse what they refuse."""
        await self.fetch_limits(attempts=3, log_failure=False)  # the caller reports it

    async def fetch_limits(
        self, attempts: int | None = None, log_failure: bool = True
    ) -> Limits | None:
        """The limits, once; None (and no more asking) where the server has no such call."""
        if self.limits_offered is False:
            return None
        path = "/accessorys/limits"
        resp = await self.core.send(
            "limits", "GET", path, attempts=attempts, log_failure=log_failure, allow=(404, 405)
        )
        if resp.status_code in (404, 405):
            self.limits_offered = False
            log.info(
                "GET %s: %s: no limits call on this server; uploads are not pre-checked",
                path,
                resp.status_code,
            )
            return None
        try:
            body = resp.json()
        except ValueError:
            body = None
        self.limits_offered = True
        self.limits = Limits.from_json(body)
        log.debug("limits: %s", self.limits)
        return self.limits

    # -- namespace -------------------------------------------------------------------------------

    async def record_exists(self, table: str, record: str) -> bool:
        """Any valid accessoryFrom value can take uploads (no request)."""
        return self.valid_record_name(table, record)

    async def list_record(self, table: str, record: str) -> list[RemoteFile]:
        """Always empty: the API cannot list (capability `list` is off)."""
        self._check(table, record)
        return []

    # -- content ---------------------------------------------------------------------------------

    @staticmethod
    def _accessory_id(file_id: str) -> str:
        try:
            accessory_id = from_id_part(file_id)
        except (ValueError, UnicodeDecodeError, TypeError):
            accessory_id = ""
        if not accessory_id or len(accessory_id) > 64 or "," in accessory_id:
            raise InvalidInput(f"invalid Huawei accessory id {file_id!r}")
        return accessory_id

    def _file_location(self, file_id: str) -> tuple[str, int | None]:
        return f"/accessorys/{quote(self._accessory_id(file_id), safe='')}", None

    def precheck(self, file_name: str, size: int, limits: Limits | None) -> None:
        """Raise what the server would refuse (size, type), before any request."""
        path = "/accessorys"
        if limits is not None and limits.size_bytes is not None and size > limits.size_bytes:
            raise self.core.failed(
                TooLarge(
                    f"POST {path}: {file_name!r} is {size} bytes, over the server's limit of "
                    f"{limits.size_bytes // (1024 * 1024)} MB",
                    method="POST",
                    path=path,
                )
            )
        ext = file_name.rsplit(".", 1)[1].lower() if "." in file_name else ""
        if limits is not None and limits.file_types and ext not in limits.file_types:
            raise self.core.failed(
                ExtensionRefused(
                    f"POST {path}: file type {ext or '(none)'!r} is not allowed "
                    f"(allowed: {','.join(sorted(limits.file_types))})",
                    method="POST",
                    path=path,
                )
            )

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
        """Upload one accessory (streamed multipart). Retried only when the server provably did
        not act; an upload in doubt after the whole body was sent is not sent again (it cannot be
        looked up) and fails."""
        self._check_upload(table, record, file_name, size)
        path = "/accessorys"
        form_data = json.dumps(
            {"fileName": file_name, "accessoryFrom": record, "uploadType": 0},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        if len(form_data) > FORM_DATA_MAX:
            raise self.core.failed(
                NameTooLong(
                    f"POST {path}: file name too long for form_data ({len(form_data)} > "
                    f"{FORM_DATA_MAX} characters)",
                    method="POST",
                    path=path,
                )
            )
        limits = self.limits if self.limits is not None else await self.fetch_limits()
        self.precheck(file_name, size, limits)  # None: the server's answer is the check
        ctype = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        boundary = "snfs-" + secrets.token_hex(16)
        b = boundary.encode()
        head = (
            b"--" + b + b'\r\nContent-Disposition: form-data; name="form_data"\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
            + form_data.encode()
            + b"\r\n"
            + b"--"
            + b
            + b'\r\nContent-Disposition: form-data; name="file"; filename="'
            + multipart_quote(file_name).encode()
            + b'"\r\nContent-Type: '
            + ctype.encode()
            + b"\r\n\r\n"
        )
        tail = b"\r\n--" + b + b"--\r\n"
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        }
        bodies, make_body = self._attempt_bodies(
            lambda: FileBody(self.stats, Path(source), size, head, tail)
        )

        async def send() -> httpx.Response:
            return await self.core.send(
                "upload",
                "POST",
                path,
                body=make_body,
                headers=headers,
                idempotent=False,
                log_failure=False,
            )

        # OSM offers no way to list a ticket's accessories: an upload in doubt after its
        # content fully left cannot be looked for, so it fails (kept in the spool).
        resp = await upload_once(self.core, send, bodies, file_name, None)
        accessory_id = ""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            accessory_id = str(body.get("accessory_id") or "")
        if not accessory_id:
            # HTTP 200 with {"error_code","error_msg"}: how OSM reports business errors.
            code, msg = _error_fields(resp)
            cls = _classify(code, msg, "upload", ServerError)
            raise self.core.failed(
                cls(
                    f"POST {path}: {resp.status_code} {msg or 'answer without accessory_id'}"
                    + (f" ({code})" if code else ""),
                    status=resp.status_code,
                    instance_message=msg or code or None,
                    method="POST",
                    path=path,
                )
            )
        now = datetime.now(UTC)
        return RemoteFile(
            sys_id=id_part(accessory_id),
            table_name=TABLE,
            table_sys_id=record,
            file_name=file_name,
            size_bytes=size,
            content_type=ctype,
            created_on=now,
            updated_on=now,
            created_by="",
            hash=bodies[-1].sha256,
            download_link=f"{self.core.base}/accessorys/{quote(accessory_id, safe='')}",
            state="available",
            extra={"accessory_id": accessory_id},
        )

    async def delete(self, file_id: str, *, missing_ok: bool = False) -> None:
        accessory_id = self._accessory_id(file_id)
        path = f"/accessorys/{quote(accessory_id, safe='')}"
        state = SendState()
        resp = await self.core.send("delete", "DELETE", path, allow=(400, 404), state=state)
        code, msg = _error_fields(resp)
        if resp.is_success and not code:
            return
        err = huawei_error(resp, "delete", "DELETE", path)
        if isinstance(err, NotFound) and (missing_ok or state.attempts > 1):
            return
        raise self.core.failed(err)

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
        """None: without a list call an accessory stored by a killed upload cannot be found
        (a crash mid-upload can therefore leave a duplicate on the server)."""
        return None


def build(o: MountOptions, url: str) -> Backend:
    """`https://ENDPOINT` with an IAM token (the profile's, --token-file or $SNFS_TOKEN)."""
    if "://" not in url:
        raise ConfigError(f"huawei: give the full URL of the server, not {url!r}")
    return HuaweiBackend(
        check_url(url, allow_insecure_http=o.allow_insecure_http),
        bearer_token(o),
        language=o.backend_options.get("huawei_language") or LANGUAGE,
        verify=str(o.ca_bundle) if o.ca_bundle else True,
        timeout=o.timeout,
        max_in_flight=o.max_in_flight,
    )


SYSTEM = System(
    name="huawei",
    summary="Huawei Cloud OSM: service-ticket accessories",
    url="huawei+https://ENDPOINT",
    capabilities=CAPS,
    build=build,
    options=(
        Option(
            "huawei_language",
            STR,
            LANGUAGE,
            "the X-Language sent to Huawei OSM (its default is zh-cn; error messages are "
            "matched in English)",
            metavar="LANG",
        ),
    ),
)
