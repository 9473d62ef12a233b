"""Emulator switches: --range, --no-rename, --max-size, --extensions, status switches, token
expiry."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from snfs.emulator.demo_data import demo_id
from tests.support.emulator_proc import EmulatorProc
from tests.support.waiting import eventually

INC3, BIG, README = demo_id("inc3"), demo_id("att:big"), demo_id("att:readme")
MB = 1024 * 1024


@pytest.fixture(scope="module")
def defaults(module_emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    """Switches on, statuses at their defaults."""
    return module_emulator_factory(
        "--demo",
        "--range",
        "--no-rename",
        "--max-size",
        "1",
        "--extensions",
        "txt,PNG,bin",
        "--token-lifetime",
        "2",
        "--state-delay",
        "0",
    )


@pytest.fixture(scope="module")
def switched(module_emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    """Every status switch flipped."""
    return module_emulator_factory(
        "--demo",
        "--max-size",
        "1",
        "--extensions",
        "txt",
        "--no-gzip",
        "--oversize-status",
        "413",
        "--extension-status",
        "403",
        "--unknown-table-upload-status",
        "400",
        "--unknown-path-status",
        "404",
        "--invalid-query-returns-no-rows",
        "--oauth-client",
        "other:pw",
        "--user",
        "bob:pw:itil",
        "--release",
        "australia",
        "--acl-denied-status",
        "403",
        "--acl-after-limit",
        "--aggregate-roles",
        "*",
    )


def test_patch_rename_and_kind_acls_when_switched(switched: EmulatorProc) -> None:
    """`--release australia` has PATCH rename; the kind switches give 403 on a denied read,
    ACLs before the limit (X-Total-Count of readable rows) and the Aggregate API to all."""
    with httpx.Client(base_url=switched.url, auth=("admin", "admin"), timeout=30) as c:
        sys_id = post(c, "old.txt", b"rename me").json()["result"]["sys_id"]
        resp = c.patch(f"/api/now/attachment/{sys_id}", json={"file_name": "new name.txt"})
        assert resp.status_code == 204 and resp.content == b""
        renamed = c.get(f"/api/now/attachment/{sys_id}").json()["result"]
        assert renamed["file_name"] == "new name.txt" and int(renamed["sys_mod_count"]) >= 1
        assert c.patch(f"/api/now/attachment/{sys_id}", json={}).status_code == 400
        hr_case = c.get("/api/now/attachment", params={"sysparm_query": "table_name=hr_case"})
        hr_att = hr_case.json()["result"][0]["sys_id"]
        every = int(c.get("/api/now/attachment").headers["x-total-count"])
    with httpx.Client(base_url=switched.url, auth=("bob", "pw"), timeout=30) as bob:
        assert bob.get(f"/api/now/attachment/{hr_att}").status_code == 403
        listed = bob.get("/api/now/attachment", params={"sysparm_limit": "1"})
        assert listed.json()["result"] and int(listed.headers["x-total-count"]) < every
        stats = bob.get("/api/now/stats/sys_attachment", params={"sysparm_count": "true"})
        assert stats.status_code == 200


@pytest.fixture
def client(defaults: EmulatorProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=defaults.url, auth=("admin", "admin"), timeout=30) as c:
        yield c


def post(client: httpx.Client, name: str, data: bytes, table: str = "incident") -> httpx.Response:
    return client.post(
        "/api/now/attachment/file",
        params={"table_name": table, "table_sys_id": INC3, "file_name": name},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def test_range_requests(client: httpx.Client) -> None:
    full = client.get(f"/api/now/attachment/{BIG}/file", headers={"Accept-Encoding": "identity"})
    assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-length"] == str(3 * MB)
    data = full.content
    resp = client.get(
        f"/api/now/attachment/{BIG}/file",
        headers={"Range": "bytes=100-199", "Accept-Encoding": "gzip"},
    )
    assert (
        resp.status_code == 206 and "content-encoding" not in resp.headers
    )  # ranges are served identity
    assert (
        resp.headers["content-range"] == f"bytes 100-199/{3 * MB}" and resp.content == data[100:200]
    )
    resp = client.get(f"/api/now/attachment/{BIG}/file", headers={"Range": f"bytes={3 * MB - 10}-"})
    assert resp.status_code == 206 and resp.content == data[-10:]
    resp = client.get(f"/api/now/attachment/{BIG}/file", headers={"Range": "bytes=-5"})
    assert resp.status_code == 206 and resp.content == data[-5:]
    resp = client.get(f"/api/now/attachment/{BIG}/file", headers={"Range": f"bytes={3 * MB}-"})
    assert resp.status_code == 416 and resp.headers["content-range"] == f"bytes */{3 * MB}"
    # gzip still applies to whole-file answers
    resp = client.get(f"/api/now/attachment/{README}/file", headers={"Accept-Encoding": "gzip"})
    assert (
        resp.headers["content-encoding"] == "gzip"
        and resp.content == b"Mail server outage notes.\n"
    )


def test_no_rename(client: httpx.Client) -> None:
    resp = client.patch(f"/api/now/attachment/{README}", json={"file_name": "x.txt"})
    assert resp.status_code == 405 and resp.json()["status"] == "failure"
    assert client.get(f"/api/now/attachment/{README}").json()["result"]["file_name"] == "readme.txt"


def test_size_and_extension_limits_default_status(client: httpx.Client) -> None:
    resp = post(client, "big.bin", b"x" * (MB + 1))
    assert (
        resp.status_code == 400
        and "exceeds the maximum allowed size" in resp.json()["error"]["message"]
    )
    resp = client.post(
        "/api/now/attachment/upload",
        data={"table_name": "incident", "table_sys_id": INC3},
        files={"f": ("big.bin", b"x" * (MB + 1), "application/octet-stream")},
    )
    assert resp.status_code == 400 and "maximum allowed size" in resp.json()["error"]["message"]
    resp = post(client, "evil.exe", b"MZ")
    assert resp.status_code == 400 and "extension" in resp.json()["error"]["message"]
    assert post(client, "noext", b"x").status_code == 400
    ok = post(client, "fine.PNG", b"x" * MB)  # exactly the limit; extensions are case-insensitive
    assert ok.status_code == 201 and ok.json()["result"]["state"] == "available"  # --state-delay 0
    assert post(client, "x.txt", b"x", table="no_such_table").status_code == 404


def test_token_expiry(defaults: EmulatorProc) -> None:
    form = {
        "grant_type": "password",
        "client_id": "snfs",
        "client_secret": "snfs-secret",
        "username": "admin",
        "password": "admin",
    }
    body = httpx.post(f"{defaults.url}/oauth_token.do", data=form).json()
    assert body["expires_in"] == 2
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (
        httpx.get(f"{defaults.url}/api/now/attachment?sysparm_limit=1", headers=bearer).status_code
        == 200
    )

    def expired() -> httpx.Response | None:
        r = httpx.get(f"{defaults.url}/api/now/attachment?sysparm_limit=1", headers=bearer)
        return r if r.status_code == 401 else None

    resp = eventually(expired, timeout=10, interval=0.2)  # expires_in 2
    assert resp.status_code == 401 and resp.json()["error"]["message"] == "User Not Authenticated"
    new = httpx.post(
        f"{defaults.url}/oauth_token.do",
        data={
            "grant_type": "refresh_token",
            "client_id": "snfs",
            "client_secret": "snfs-secret",
            "refresh_token": body["refresh_token"],
        },
    ).json()
    assert new["access_token"] != body["access_token"]
    assert (
        httpx.get(
            f"{defaults.url}/api/now/attachment?sysparm_limit=1",
            headers={"Authorization": f"Bearer {new['access_token']}"},
        ).status_code
        == 200
    )


def test_switched_statuses(switched: EmulatorProc) -> None:
    with httpx.Client(base_url=switched.url, auth=("admin", "admin"), timeout=30) as c:
        assert post(c, "big.txt", b"x" * (MB + 1)).status_code == 413
        assert post(c, "evil.exe", b"MZ").status_code == 403
        resp = post(c, "x.txt", b"x", table="no_such_table")
        assert (
            resp.status_code == 400
            and resp.json()["error"]["message"] == "Invalid table no_such_table"
        )
        assert c.get("/api/now/nothing").status_code == 404
        assert (
            c.get("/api/now/attachment", params={"sysparm_query": "bogus=1"}).json()["result"] == []
        )
        assert c.get(
            "/api/now/attachment", params={"sysparm_query": "file_name=readme.txt"}
        ).json()["result"]
        resp = c.get(f"/api/now/attachment/{README}/file", headers={"Accept-Encoding": "gzip"})
        assert (
            "content-encoding" not in resp.headers
            and resp.content == b"Mail server outage notes.\n"
        )
    token = httpx.post(
        f"{switched.url}/oauth_token.do",
        data={
            "grant_type": "password",
            "client_id": "other",
            "client_secret": "pw",
            "username": "bob",
            "password": "pw",
        },
    )
    assert token.status_code == 200
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert (
        httpx.get(f"{switched.url}/api/now/attachment/{README}", headers=bearer).status_code == 200
    )


def test_documented_defaults_size_limit_and_by_name_fields(
    emulator_factory: Callable[..., EmulatorProc],
) -> None:
    """As the Attachment API documents by default: com.glide.attachment.max_size 1024 MB (the
    refusal itself is tested with --max-size 1 above); created_by_name / updated_by_name in
    the POST answers (the GET schema has no such fields). --max-size 0 and
    --no-by-name-fields take them away."""
    strict = emulator_factory("--demo", "--state-delay", "0")
    assert strict.json("GET", "/__emulator__/state")["config"]["max_size_mb"] == 1024
    url = f"/api/now/attachment/file?table_name=incident&table_sys_id={INC3}&file_name=a.txt"
    answer = strict.json("POST", url, b"a", headers={"Content-Type": "text/plain"})["result"]
    assert answer["created_by_name"] == answer["updated_by_name"] == "System Administrator"
    got = strict.json("GET", f"/api/now/attachment/{answer['sys_id']}")["result"]
    assert "created_by_name" not in got
    kind = emulator_factory("--demo", "--max-size", "0", "--no-by-name-fields")
    assert kind.json("GET", "/__emulator__/state")["config"]["max_size_mb"] is None
    answer = kind.json("POST", url, b"a", headers={"Content-Type": "text/plain"})["result"]
    assert "created_by_name" not in answer


def test_each_switch_is_declared_once_on_the_config(tmp_path) -> None:
    """The command line comes from `Config`'s fields: a switch not given leaves the field's
    default, a given one is converted into the field's value (no second list to drift)."""
    from dataclasses import fields

    from snfs.emulator.main import build_config, parse_args
    from snfs.emulator.state import Config

    plain = build_config(parse_args([]), tmp_path)
    for f in fields(Config):
        if f.name not in ("host", "port", "data_dir"):
            assert getattr(plain, f.name) == getattr(Config(), f.name), f.name
    args = ["--max-size", "0", "--row-time", "5", "--no-gzip", "--deny", "u:active=true"]
    args += ["--aggregate-roles", "admin, itil", "--release", "australia", "--mfa-user", "m"]
    c = build_config(parse_args(args), tmp_path)
    assert c.max_size_mb is None and c.row_time == 0.005 and not c.gzip
    assert c.deny == (("u", "active=true"),) and c.aggregate_roles == {"admin", "itil"}
    assert c.rename and c.mfa_users == {"m"} and c.oauth_clients == {"snfs": "snfs-secret"}
    assert not build_config(parse_args(["--release", "australia", "--no-rename"]), tmp_path).rename


def test_other_kinds_switches_come_from_their_configs() -> None:
    from snfs.emulator import easyvista as ev
    from snfs.emulator import huawei as hw
    from snfs.emulator.main import parse_args
    from snfs.emulator.switches import given

    a = parse_args(["--kind", "huawei", "--token", "t", "--limit-count", "-3", "--no-limits"])
    c = hw.HWConfig(**given(a, hw.HWConfig))
    assert c.tokens == ["t"] and c.limit_count == 0 and not c.limits_api
    assert hw.HWConfig(**given(parse_args([]), hw.HWConfig)).tokens == ["test-token"]
    e = ev.EVConfig(**given(parse_args(["--no-delete", "--max-body", "2"]), ev.EVConfig))
    assert not e.delete and e.max_body_mb == 2.0 and e.list_documents
