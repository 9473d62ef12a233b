"""`snfs emulator --kind huawei`: every endpoint over a real socket, token auth, limits,
switches."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.client_support import payload, sha256, shared_emulator
from tests.support.emulator_proc import EmulatorProc

emu = shared_emulator("--kind", "huawei", "--limit-size", "1")
emu_b = shared_emulator(
    "--kind",
    "huawei",
    "--token",
    "t2",
    "--token",
    "t3",
    "--limit-count",
    "2",
    "--limit-file-type",
    ".TXT,bin",
    "--business-errors-200",
    "--not-found-status",
    "400",
)

TOKEN = {"X-Auth-Token": "test-token"}
EN = {**TOKEN, "X-Language": "en-us"}  # the messages asserted on below are English


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest):
    for name in ("emu", "emu_b"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset_stats()
    yield


def api(e: EmulatorProc) -> str:
    return f"{e.url}/v2/servicerequest"


def upload(
    e: EmulatorProc,
    name: str | None,
    data: bytes,
    source: str = "incident",
    headers: dict[str, str] = EN,
    form_data: str | None = None,
) -> httpx.Response:
    fd = (
        form_data
        if form_data is not None
        else json.dumps(
            {
                **({"fileName": name} if name is not None else {}),
                "accessoryFrom": source,
                "uploadType": 0,
            }
        )
    )
    return httpx.post(
        f"{api(e)}/accessorys",
        headers=headers,
        data={"form_data": fd},
        files={"file": (name or "f", data)},
    )


def test_token_auth(emu) -> None:
    url = f"{api(emu)}/accessorys/limits"
    r = httpx.get(url)
    assert r.status_code == 401 and r.json()["error_code"] == "APIGW.0301"
    r = httpx.get(url, headers={"X-Auth-Token": "wrong"})
    assert r.status_code == 401 and set(r.json()) == {"error_code", "error_msg"}
    r = httpx.get(url, headers={"X-Auth-Token": "x" * 5001})
    assert r.status_code == 400 and "5000" in r.json()["error_msg"]
    assert upload(emu, "a.txt", b"a", headers={}).status_code == 401


def test_several_tokens(emu_b) -> None:
    for token in ("t2", "t3"):
        assert (
            httpx.get(
                f"{api(emu_b)}/accessorys/limits", headers={"X-Auth-Token": token}
            ).status_code
            == 200
        )
    assert httpx.get(f"{api(emu_b)}/accessorys/limits", headers=TOKEN).status_code == 401


def test_limits(emu, emu_b) -> None:
    lim = httpx.get(f"{api(emu)}/accessorys/limits", headers=TOKEN).json()["accessory_limit"]
    assert lim["limit_size"] == "1" and lim["limit_count"] == "100"
    assert {"txt", "pdf", "png", "jpg", "docx", "xlsx", "zip", "log", "csv"} <= set(
        lim["limit_file_type"].split(",")
    )
    lim = httpx.get(f"{api(emu_b)}/accessorys/limits", headers={"X-Auth-Token": "t2"}).json()[
        "accessory_limit"
    ]
    assert lim == {"limit_count": "2", "limit_size": "4", "limit_file_type": "bin,txt"}


def test_upload_download_urls_delete(emu) -> None:
    data = payload(300_000, 7)
    r = upload(emu, "trace é.log", data)
    assert r.status_code == 200, r.text
    aid = r.json()["accessory_id"]
    assert 1 <= len(aid) <= 64
    r = httpx.get(f"{api(emu)}/accessorys/{aid}", headers=TOKEN)
    assert r.status_code == 200 and sha256(r.content) == sha256(data)
    assert r.headers["content-length"] == str(len(data))
    assert "filename*=UTF-8''trace%20%C3%A9.log" in r.headers["content-disposition"]
    assert httpx.get(f"{api(emu)}/accessorys/{aid}").status_code == 401
    r = httpx.get(
        f"{api(emu)}/accessorys/access-urls", params={"accessory_ids": f"{aid},nope"}, headers=TOKEN
    )
    (entry,) = r.json()["accessory_urls"]
    assert entry["accessory_id"] == aid
    assert httpx.get(entry["accessory_url"]).content == data  # no token needed
    assert httpx.get(entry["accessory_url"].replace("Signature=", "Signature=0")).status_code == 403
    r = httpx.get(f"{api(emu)}/accessorys/access-urls", headers=TOKEN)
    assert r.status_code == 400
    r = httpx.delete(f"{api(emu)}/accessorys/{aid}", headers=TOKEN)
    assert r.status_code == 200 and r.json() == {"error_code": "", "error_msg": ""}
    r = httpx.delete(f"{api(emu)}/accessorys/{aid}", headers=TOKEN)
    assert r.status_code == 404 and r.json()["error_code"] == "OSM.01010104"
    assert httpx.get(f"{api(emu)}/accessorys/{aid}", headers=TOKEN).status_code == 404


def test_no_list_endpoint(emu) -> None:
    r = httpx.get(f"{api(emu)}/accessorys", headers=TOKEN)
    assert r.status_code == 405
    r = httpx.get(f"{api(emu)}/cases", headers=TOKEN)
    assert r.status_code == 404 and r.json()["error_code"] == "APIGW.0101"


def test_upload_refusals(emu) -> None:
    r = upload(emu, "big.zip", payload(1024 * 1024 + 1))
    assert (
        r.status_code == 400
        and r.json()["error_code"] == "OSM.01010101"
        and "size" in r.json()["error_msg"]
    )
    r = upload(emu, "tool.exe", b"MZ")
    assert (
        r.status_code == 400
        and r.json()["error_code"] == "OSM.01010102"
        and "type" in r.json()["error_msg"]
    )
    assert upload(emu, "noext", b"x").json()["error_code"] == "OSM.01010102"
    r = upload(emu, None, b"x")
    assert r.status_code == 400 and "fileName" in r.json()["error_msg"]
    r = upload(emu, "a.txt", b"x", form_data=json.dumps({"fileName": "a" * 5000 + ".txt"}))
    assert r.status_code == 400 and "5000" in r.json()["error_msg"]
    r = upload(emu, "a.txt", b"x", form_data="{not json")
    assert r.status_code == 400
    r = httpx.post(
        f"{api(emu)}/accessorys",
        headers=EN,
        data={"form_data": json.dumps({"fileName": "a.txt"})},
    )
    assert r.status_code == 400 and "multipart" in r.json()["error_msg"]  # urlencoded
    r = httpx.post(
        f"{api(emu)}/accessorys",
        headers=EN,
        files={"form_data": (None, json.dumps({"fileName": "a.txt", "accessoryFrom": "x"}))},
    )
    assert r.status_code == 400 and "file is required" in r.json()["error_msg"]
    assert emu.stats()["by_route"]["POST /accessorys"] == 8


def test_count_limit_business_200_and_not_found_400(emu_b) -> None:
    tok = {"X-Auth-Token": "t2", "X-Language": "en-us"}
    emu_b.json("POST", "/__emulator__/reset", {"data": True})
    for i in range(2):
        assert (
            "accessory_id" in upload(emu_b, f"{i}.txt", b"x", source="message", headers=tok).json()
        )
    r = upload(emu_b, "2.txt", b"x", source="message", headers=tok)
    assert r.status_code == 200 and r.json()["error_code"] == "OSM.01010103"
    assert "accessory_id" in upload(emu_b, "3.txt", b"x", source="incident", headers=tok).json()
    r = upload(emu_b, "x.pdf", b"x", headers=tok)
    assert r.status_code == 200 and r.json()["error_code"] == "OSM.01010102"
    r = httpx.delete(f"{api(emu_b)}/accessorys/nope", headers=tok)
    assert r.status_code == 400 and r.json()["error_code"] == "OSM.01010104"


def test_stats_and_faults(emu) -> None:
    aid = upload(emu, "a.txt", b"a").json()["accessory_id"]
    httpx.get(f"{api(emu)}/accessorys/{aid}", headers=TOKEN)
    httpx.get(f"{api(emu)}/accessorys/limits", headers=TOKEN)
    routes = emu.stats()["by_route"]
    assert routes["POST /accessorys"] == 1 and routes["GET /accessorys/{accessory_id}"] == 1
    assert routes["GET /accessorys/limits"] == 1 and routes["GET /accessorys/access-urls"] == 0
    assert routes["DELETE /accessorys/{accessory_id}"] == 0
    emu.fault(method="GET", path=r"/accessorys/limits$", status=429, retry_after=2)
    r = httpx.get(f"{api(emu)}/accessorys/limits", headers=TOKEN)
    assert r.status_code == 429 and r.headers["retry-after"] == "2" and "error_code" in r.json()
    emu.fault(method="GET", path=r"/accessorys/limits$", status=503)
    r = httpx.get(f"{api(emu)}/accessorys/limits", headers=TOKEN)
    assert r.status_code == 503 and r.json()["error_code"] == "OSM.0004"
    assert emu.request("GET", "/__emulator__/stats", auth=("admin", "x"))[0] == 401


def test_as_document_003_says(emu) -> None:
    """accessoryFrom required; X-Language / X-Time-Zone 1 to 32 characters; messages in the
    default language zh-cn unless X-Language asks for English."""
    r = upload(emu, "a.txt", b"x", form_data=json.dumps({"fileName": "a.txt"}))
    assert r.status_code == 400 and "accessoryFrom" in r.json()["error_msg"]
    for header in ("X-Language", "X-Time-Zone"):
        for bad in ("", "x" * 33):
            r = upload(emu, "a.txt", b"x", headers={**TOKEN, header: bad})
            assert r.status_code == 400, (header, bad)
        r = upload(emu, "a.txt", b"x", headers={**TOKEN, header: "x" * 32})
        assert r.status_code == 200 and r.json()["accessory_id"]
    r = upload(emu, "big.zip", payload(1024 * 1024 + 1), headers=TOKEN)
    assert r.json() == {"error_code": "OSM.01010101", "error_msg": "附件大小超过限制"}
    r = upload(emu, "big.zip", payload(1024 * 1024 + 1), headers={**TOKEN, "X-Language": "zh-cn"})
    assert r.json()["error_msg"] == "附件大小超过限制"
    r = upload(emu, "big.zip", payload(1024 * 1024 + 1))
    assert "size" in r.json()["error_msg"]


def test_no_limits_switch(emulator_factory) -> None:
    e = emulator_factory("--kind", "huawei", "--no-limits")
    r = httpx.get(f"{api(e)}/accessorys/limits", headers=TOKEN)
    assert r.status_code == 404 and r.json()["error_code"] == "APIGW.0101"
    assert upload(e, "a.txt", b"x").json()["accessory_id"]
