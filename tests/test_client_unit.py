"""Client pieces that need no instance: URLs, secrets, parsing, reprs."""

from __future__ import annotations

import errno
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from snfs.auth import BasicAuth, BearerToken, OAuth
from snfs.backends.servicenow.client import (
    Attachment,
    ClientConfig,
    _http_error,
    _parse_link,
    normalize_instance_url,
)
from snfs.errors import (
    AuthError,
    ConfigError,
    ExtensionRefused,
    FailedInBody,
    Forbidden,
    InvalidInput,
    NotAnApi,
    NotFound,
    NotTheContent,
    RateLimited,
    ServerError,
    SnfsError,
    TooLarge,
    Unsupported,
)
from snfs.secrets import Secret, load_secret


def test_normalize_instance_url() -> None:
    assert normalize_instance_url("dev12345") == "https://dev12345.service-now.com"
    assert normalize_instance_url("https://x.example/") == "https://x.example"
    assert normalize_instance_url("acme.service-now.com") == "https://acme.service-now.com"
    assert normalize_instance_url("https://x.example/api/now") == "https://x.example"
    assert normalize_instance_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert normalize_instance_url("http://127.5.0.1:80/") == "http://127.5.0.1:80"
    assert normalize_instance_url("http://[::1]:9") == "http://[::1]:9"
    assert normalize_instance_url("http://localhost:9") == "http://localhost:9"
    assert (
        normalize_instance_url("http://x.example", allow_insecure_http=True) == "http://x.example"
    )
    for bad in (
        "http://x.example",
        "http://10.0.0.1",
        "ftp://x.example",
        "",
        "https://",
        "https://x.example/?a=b",
    ):
        with pytest.raises(ConfigError):
            normalize_instance_url(bad)
    with pytest.raises(ConfigError) as e:
        normalize_instance_url("https://admin:hunter2@x.example")
    assert "hunter2" not in str(e.value)


def test_attachment_from_json_tolerant() -> None:
    a = Attachment.from_json(
        {
            "sys_id": "a" * 32,
            "size_bytes": "12",
            "sys_created_on": "2026-01-02 03:04:05",
            "hash": "h",
            "table_name": {"value": "incident", "display_value": "Incident"},
        }
    )
    assert a.size_bytes == 12 and a.table_name == "incident" and a.hash == "h"
    assert a.created_on == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    b = Attachment.from_json({"size_bytes": "", "sys_updated_on": "garbage", "state": None})
    assert b.size_bytes == 0 and b.file_name == "" and b.state == ""
    assert b.updated_on.tzinfo is not None


def test_parse_link() -> None:
    h = (
        '<https://i/api/now/attachment?sysparm_limit=1&sysparm_offset=0>;rel="first",'
        '<https://i/api/now/attachment?sysparm_limit=1&sysparm_offset=-1>;rel="prev",'
        '<https://i/api/now/attachment?sysparm_query=a%3Db,c&sysparm_limit=1&sysparm_offset=1>;rel="next",'
        '<https://i/api/now/attachment?sysparm_limit=1&sysparm_offset=72>;rel="last"'
    )
    links = _parse_link(h)
    assert set(links) == {"first", "prev", "next", "last"}
    assert links["next"].endswith("sysparm_offset=1")
    assert _parse_link(None) == {}


def _resp(status: int, body: bytes, ctype: str = "application/json") -> httpx.Response:
    return httpx.Response(
        status,
        content=body,
        headers={"content-type": ctype},
        request=httpx.Request("GET", "https://i/api/now/attachment/x"),
    )


@pytest.mark.parametrize(
    "status,body,kind,cls",
    [
        (
            401,
            b'{"error":{"message":"User Not Authenticated",'
            b'"detail":"Required to provide Auth information"},"status":"failure"}',
            "get",
            AuthError,
        ),
        (
            403,
            b'{"error":{"detail":null,"message":"Insufficient rights"},"status":"failure"}',
            "get",
            Forbidden,
        ),
        (
            404,
            b'{"error":{"message":"No Record found","detail":"Record doesn\'t exist"},'
            b'"status":"failure"}',
            "get",
            NotFound,
        ),
        (405, b"", "rename", Unsupported),
        (413, b"<html>too big</html>", "upload", TooLarge),
        (429, b'{"error":{"message":"Rate limit exceeded","detail":null}}', "list", RateLimited),
        (
            400,
            b'{"error":{"message":"Attachment size exceeds the maximum allowed size",'
            b'"detail":"x"}}',
            "upload",
            TooLarge,
        ),
        (
            400,
            b'{"error":{"message":"File extension \'exe\' is not allowed","detail":null}}',
            "upload",
            ExtensionRefused,
        ),
        (400, b'{"error":{"message":"Invalid table x","detail":null}}', "upload", InvalidInput),
        (500, b"<html><body>Oops</body></html>", "get", ServerError),
        (502, b"not json", "get", ServerError),
    ],
)
def test_error_mapping(status: int, body: bytes, kind: str, cls: type) -> None:
    err = _http_error(
        _resp(status, body, "text/html" if body.startswith(b"<") else "application/json"),
        kind,
        "GET",
        "/attachment/x",
    )
    assert type(err) is cls
    assert err.status == status and err.path == "/attachment/x" and err.method == "GET"
    assert "<html>" not in err.message


def test_errno_values() -> None:
    import errno

    assert AuthError("x").errno == Forbidden("x").errno == errno.EACCES
    assert TooLarge("x").errno == errno.EFBIG and ExtensionRefused("x").errno == errno.EPERM
    assert RateLimited("x").errno == errno.EAGAIN and ServerError("x").errno == errno.EIO
    assert NotFound("x").errno == errno.ENOENT and InvalidInput("x").errno == errno.EINVAL


def test_secret_hidden() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in repr(s) + str(s) + f"{s}" + "%s" % (s,)  # noqa: UP031 - %-formatting must hide it too
    assert s.reveal() == "hunter2"
    for auth in (
        BasicAuth("admin", "hunter2"),
        BearerToken("hunter2"),
        OAuth(
            "https://i/oauth_token.do",
            "cid",
            "hunter2",
            grant="password",
            user="admin",
            password="hunter2",
        ),
    ):
        assert "hunter2" not in repr(auth)
    cfg = ClientConfig("https://i", BasicAuth("admin", "hunter2"))
    assert "hunter2" not in repr(cfg)


def test_load_secret_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret-file\nsecond line\n")
    f.chmod(0o600)
    assert load_secret(file=f, env="SNFS_TEST_PW") == "s3cret-file"
    monkeypatch.setenv("SNFS_TEST_PW", "s3cret-env")
    assert load_secret(env="SNFS_TEST_PW") == "s3cret-env"
    # systemd credential
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "snfs-pw").write_text("s3cret-cred\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_secret(credential="snfs-pw", env="SNFS_TEST_PW") == "s3cret-cred"
    # netrc
    netrc = tmp_path / "netrc"
    netrc.write_text("machine dev1.service-now.com login admin password s3cret-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.delenv("SNFS_TEST_PW")
    assert (
        load_secret(
            env="SNFS_TEST_PW",
            netrc_host="dev1.service-now.com",
            netrc_login="admin",
            netrc_file=netrc,
        )
        == "s3cret-netrc"
    )
    monkeypatch.setenv("NETRC", str(netrc))
    assert load_secret(netrc_host="dev1.service-now.com") == "s3cret-netrc"
    with pytest.raises(ConfigError) as e:
        load_secret(env="SNFS_TEST_PW", netrc_host="other.example", netrc_file=netrc)
    assert "SNFS_TEST_PW" in str(e.value) and "other.example" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_secret(file=tmp_path / "missing")
    assert "missing" in str(e.value)
    # a group-readable file: warned about, still used; the secret never in a message
    f.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert load_secret(file=f) == "s3cret-file"
    assert "readable" in caplog.text and "s3cret" not in caplog.text
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError):
        load_secret(credential="snfs-pw")
    bad = tmp_path / "badnetrc"
    bad.write_text("machine x login y password s3cret-bad\nbogus s3cret-bad2\n")
    bad.chmod(0o600)
    with pytest.raises(ConfigError) as e:
        load_secret(netrc_host="x", netrc_file=bad)
    assert "s3cret" not in str(e.value)
    os.environ.pop("NETRC", None)


# -- behaviour that the emulator cannot provoke, with an in-process mock transport -----------

from snfs.backends.servicenow.client import AttachmentClient  # noqa: E402

SID = "0123456789abcdef0123456789abcdef"


def _mock_client(handler, **kw) -> AttachmentClient:
    cfg = ClientConfig(
        "https://dev1.service-now.com",
        BasicAuth("admin", "pw"),
        retry_base_delay=0.01,
        retry_max_delay=0.02,
        **kw,
    )
    c = AttachmentClient(cfg)
    c._http = httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=cfg.auth)
    return c


async def test_delete_404_after_lost_response_counts_as_done() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(404, json={"error": {"message": "No Record found", "detail": None}})

    async with _mock_client(handler) as c:
        await c.delete(SID)  # not missing_ok: the first attempt did it
    assert calls == ["DELETE", "DELETE"]


async def test_paging_follows_link_and_ignores_negative_prev() -> None:
    rows = [{"sys_id": f"{i:032x}", "file_name": f"f{i}"} for i in range(7)]
    seen_offsets = []

    def handler(request: httpx.Request) -> httpx.Response:
        off = int(request.url.params["sysparm_offset"])
        seen_offsets.append(off)
        cap = 3  # the server caps the page size below what we asked
        page = rows[off : off + cap]
        base = "https://elsewhere.example/api/now/attachment?sysparm_limit=3&sysparm_offset="
        links = [f'<{base}0>;rel="first"', f'<{base}{off - 1}>;rel="prev"']
        if off + cap < len(rows):
            links.append(f'<{base}{off + cap}>;rel="next"')
        links.append(f'<{base}6>;rel="last"')
        return httpx.Response(
            200,
            json={"result": page},
            headers={"Link": ",".join(links), "X-Total-Count": str(len(rows))},
        )

    async with _mock_client(handler) as c:
        got = await c.list_all("file_nameSTARTSWITHf", page_size=1000)
    assert [a.file_name for a in got] == [f"f{i}" for i in range(7)]
    assert seen_offsets == [0, 3, 6]


async def test_paging_without_link_uses_total_count() -> None:
    rows = [{"sys_id": f"{i:032x}"} for i in range(5)]

    def handler(request: httpx.Request) -> httpx.Response:
        off = int(request.url.params["sysparm_offset"])
        return httpx.Response(
            200, json={"result": rows[off : off + 2]}, headers={"X-Total-Count": "5"}
        )

    async with _mock_client(handler) as c:
        assert len(await c.list_all("", page_size=1000)) == 5


async def test_redirects_are_not_followed_with_credentials() -> None:
    hosts = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(302, headers={"Location": "https://evil.example/steal"})

    async with _mock_client(handler) as c:
        with pytest.raises(SnfsError):
            await c.get(SID)
    assert hosts == ["dev1.service-now.com"]


# -- answers a real instance gives that a kind server never does (mocks: exact sequences of
# answers the emulator cannot be told to give one after the other) -----------------------------

QUOTA = {"message": "Transaction cancelled: maximum execution time exceeded", "detail": None}


async def test_error_in_a_200_body_is_retried_never_a_listing() -> None:
    rows = [{"sys_id": f"{i:032x}", "file_name": f"f{i}"} for i in range(3)]
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.params["sysparm_offset"])
        if len(calls) == 1:  # cut by the quota: partial result, error, failure
            return httpx.Response(
                200, json={"result": rows[:1], "error": QUOTA, "status": "failure"}
            )
        return httpx.Response(200, json={"result": rows}, headers={"X-Total-Count": "3"})

    async with _mock_client(handler) as c:
        got = await c.list_all("")
        assert [a.file_name for a in got] == ["f0", "f1", "f2"]
        assert calls == ["0", "0"] and c.stats.retries == 1


async def test_error_in_a_200_body_fails_with_one_log_line(caplog) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"result": [], "error": QUOTA, "status": "failure"})

    caplog.set_level(logging.WARNING)
    async with _mock_client(handler, retry_attempts=3) as c:
        with pytest.raises(FailedInBody) as e:
            await c.list_all("")
    assert e.value.errno == errno.EIO
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "maximum execution time exceeded" in lines[0]


async def test_an_html_page_is_not_an_api_answer() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(
            200, content=b"<html><body>Instance hibernating</body></html>", headers={}
        )

    async with _mock_client(handler) as c:
        with pytest.raises(NotAnApi) as e:
            await c.check()
    assert "hibernating developer instance, or not the REST API?" in e.value.message
    assert calls == ["/api/now/attachment"]  # not retried: asking again does not help


async def test_an_upload_answer_without_a_valid_new_sys_id_is_not_stored() -> None:
    """A 201 whose body names no valid sys_id, or one of those the upload replaces, is in
    doubt: the attachment is looked for, and without it the upload fails (nothing deleted)."""
    old = "a" * 32
    methods = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        if request.method == "POST":
            answer = {"sys_id": "not-a-sys-id"} if methods.count("POST") == 1 else {"sys_id": old}
            return httpx.Response(201, json={"result": answer})
        return httpx.Response(200, json={"result": []}, headers={"X-Total-Count": "0"})

    async with _mock_client(handler, in_doubt_wait=0.05) as c:
        with pytest.raises(ServerError) as e:
            await c.upload("incident", "b" * 32, "x.txt", b"new content", replaces=[old])
    assert "valid new sys_id" in e.value.message
    assert "DELETE" not in methods and methods.count("POST") == 3  # three rounds, each looked for


async def test_a_file_whose_hash_differs_is_not_the_content() -> None:
    body = b"what the instance sent"
    meta = f'{{"sys_id": "{SID}", "size_bytes": "{len(body)}", "hash": "{"0" * 64}"}}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"X-Attachment-Metadata": meta})

    async with _mock_client(handler) as c:
        with pytest.raises(NotTheContent) as e:
            b"".join([chunk async for chunk in c.stream(SID)])
    assert "SHA-256" in e.value.message and e.value.discard_partial
