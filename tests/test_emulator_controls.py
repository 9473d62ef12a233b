"""Test controls (/__emulator__/): faults, stats, reset; and restart persistence."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from snfs.emulator.demo_data import demo_id
from tests.support.emulator_proc import EmulatorProc, start_emulator
from tests.support.waiting import eventually

INC3, BIG, README = demo_id("inc3"), demo_id("att:big"), demo_id("att:readme")
DEMO_TOTAL = 17


@pytest.fixture(scope="module")
def emu(module_emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    return module_emulator_factory("--demo")


@pytest.fixture
def client(emu: EmulatorProc) -> Iterator[httpx.Client]:
    emu.reset_stats()  # also clears faults
    with httpx.Client(base_url=emu.url, auth=("admin", "admin"), timeout=30) as c:
        yield c


def test_status_faults_are_consumed_in_order(client: httpx.Client, emu: EmulatorProc) -> None:
    emu.fault(method="GET", path=r"/attachment$", count=2, status=503)
    assert client.post("/__emulator__/faults", json={"path": "/table/", "status": 500}).json() == {
        "queued": 3
    }
    for _ in range(2):
        resp = client.get("/api/now/attachment")
        assert resp.status_code == 503 and resp.json()["status"] == "failure"
    assert client.get(f"/api/now/attachment/{README}").status_code == 200  # path does not match
    assert client.get("/api/now/attachment").status_code == 200
    assert client.get("/api/now/table/incident").status_code == 500
    assert client.get("/api/now/table/incident").status_code == 200


def test_rate_limit_fault(client: httpx.Client, emu: EmulatorProc) -> None:
    emu.fault(status=429, retry_after=3)
    resp = client.get("/api/now/attachment")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    assert resp.json() == {
        "error": {
            "message": "Rate limit exceeded",
            "detail": "Rate limit of 100 requests per hour for Table API exceeded",
        },
        "status": "failure",
    }


def test_method_filter_and_clear(client: httpx.Client, emu: EmulatorProc) -> None:
    emu.fault(method="POST", status=500)
    assert client.get("/api/now/attachment?sysparm_limit=1").status_code == 200
    assert client.delete("/__emulator__/faults").json() == {"queued": 0}
    resp = client.post(
        "/api/now/attachment/file",
        params={"table_name": "incident", "table_sys_id": INC3, "file_name": "f.txt"},
        content=b"x",
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status_code == 201


def test_status_fault_on_upload_still_answers(client: httpx.Client, emu: EmulatorProc) -> None:
    emu.fault(method="POST", path="/attachment/file", status=503)
    resp = client.post(
        "/api/now/attachment/file",
        params={"table_name": "incident", "table_sys_id": INC3, "file_name": "f.bin"},
        content=b"y" * (2 * 1024 * 1024),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 503


def test_delay_fault(client: httpx.Client, emu: EmulatorProc) -> None:
    """No stopwatch: a delay far over a client timeout shows as that timeout, once."""
    emu.fault(path="/attachment/", delay=5)
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"/api/now/attachment/{README}", timeout=1)
    assert client.get(f"/api/now/attachment/{README}", timeout=4).status_code == 200


def test_clearing_faults_lets_go_of_held_requests(client: httpx.Client, emu: EmulatorProc) -> None:
    """A request held by a 600 s delay is answered once the faults are cleared, well inside a
    20 s client timeout (a test's clean-up never waits out its delays)."""
    emu.fault(path="/attachment/", delay=600)
    answered: list[int] = []
    holder = threading.Thread(
        target=lambda: answered.append(
            client.get(f"/api/now/attachment/{README}", timeout=20).status_code
        )
    )
    holder.start()
    eventually(lambda: emu.stats()["by_route"].get("GET /attachment/{sys_id}", 0) >= 1)
    assert answered == []  # still held
    emu.json("DELETE", "/__emulator__/faults")
    holder.join(25)
    assert answered == [200]


def test_hold_fault_answers_as_of_arrival_once_released(
    client: httpx.Client, emu: EmulatorProc
) -> None:
    """A held answer is computed when the request arrives: a change made meanwhile is not in
    it; `release` sends it."""
    emu.fault(method="GET", path=r"/attachment$", query=f"table_sys_id={INC3}", hold=True)
    box: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=emu.url, auth=("admin", "admin"), timeout=30) as other:
        waiter = threading.Thread(
            target=lambda: box.setdefault(
                "r", other.get(f"/api/now/attachment?sysparm_query=table_sys_id={INC3}")
            )
        )
        waiter.start()
        eventually(lambda: client.get("/__emulator__/state").json()["held"] == 1)
        assert "r" not in box  # still held
        made = client.post(
            f"/api/now/attachment/file?table_name=incident&table_sys_id={INC3}&file_name=late.txt",
            content=b"x",
            headers={"Content-Type": "text/plain"},
        ).json()["result"]["sys_id"]
        assert client.post("/__emulator__/release").json() == {"released": 1}
        waiter.join(10)
    listed = {a["sys_id"] for a in box["r"].json()["result"]}
    assert listed and made not in listed
    assert client.get("/__emulator__/state").json()["held"] == 0


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_drop_after_bytes(client: httpx.Client, emu: EmulatorProc, encoding: str) -> None:
    emu.fault(method="GET", path=r"/file$", drop_after_bytes=100_000)
    received = b""
    with (
        pytest.raises(httpx.HTTPError),
        client.stream(
            "GET", f"/api/now/attachment/{BIG}/file", headers={"Accept-Encoding": encoding}
        ) as resp,
    ):
        assert resp.status_code == 200
        for chunk in resp.iter_raw():
            received += chunk
    assert len(received) == 100_000
    if encoding == "identity":
        full = client.get(
            f"/api/now/attachment/{BIG}/file", headers={"Accept-Encoding": "identity"}
        ).content
        assert received == full[:100_000]


def test_drop_on_metadata(client: httpx.Client, emu: EmulatorProc) -> None:
    emu.fault(path="/attachment$", drop_after_bytes=0)
    with pytest.raises(httpx.HTTPError):
        client.get("/api/now/attachment")
    assert client.get("/api/now/attachment").status_code == 200


def test_stats_counting(client: httpx.Client, emu: EmulatorProc) -> None:
    assert emu.stats()["total"] == 0
    client.get("/api/now/attachment")
    client.get("/api/now/v1/attachment")
    client.get(f"/api/now/attachment/{README}")
    size = len(
        client.get(
            f"/api/now/attachment/{BIG}/file", headers={"Accept-Encoding": "identity"}
        ).content
    )
    client.post(
        "/api/now/attachment/file",
        params={"table_name": "incident", "table_sys_id": INC3, "file_name": "s.txt"},
        content=b"z" * 5000,
        headers={"Content-Type": "text/plain"},
    )
    client.get("/api/now/table/incident")
    client.get("/api/now/stats/incident?sysparm_count=true")
    client.get("/api/now/nothing")
    stats = emu.stats()
    assert stats["total"] == 8
    assert stats["by_method"]["GET"] == 7 and stats["by_method"]["POST"] == 1
    routes = stats["by_route"]
    assert routes["GET /attachment"] == 2 and routes["GET /attachment/{sys_id}"] == 1
    assert routes["GET /attachment/{sys_id}/file"] == 1 and routes["POST /attachment/file"] == 1
    assert routes["GET /table/{table}"] == 1 and routes["GET /stats/{table}"] == 1
    assert routes["POST /oauth_token.do"] == 0 and routes["PATCH /attachment/{sys_id}"] == 0
    assert set(routes) == {
        "GET /attachment",
        "GET /attachment/{sys_id}",
        "GET /attachment/{sys_id}/file",
        "POST /attachment/file",
        "POST /attachment/upload",
        "DELETE /attachment/{sys_id}",
        "PATCH /attachment/{sys_id}",
        "GET /table/{table}",
        "GET /table/{table}/{sys_id}",
        "POST /table/{table}",
        "DELETE /table/{table}/{sys_id}",
        "GET /stats/{table}",
        "POST /oauth_token.do",
        "POST /cccif/media/upload",
        "GET /cs/media/{token}",
    }
    assert stats["bytes_out"] > size and stats["bytes_in"] == 5000
    assert emu.stats()["total"] == 8  # control requests are not counted


def test_reset_data(client: httpx.Client, emu: EmulatorProc) -> None:
    client.post(
        "/api/now/attachment/file",
        params={"table_name": "incident", "table_sys_id": INC3, "file_name": "temp.txt"},
        content=b"temp",
        headers={"Content-Type": "text/plain"},
    )
    assert len(emu.attachments()) > DEMO_TOTAL
    emu.json("POST", "/__emulator__/reset", {"data": True})
    rows = emu.attachments()
    assert len(rows) == DEMO_TOTAL and "temp.txt" not in {r["file_name"] for r in rows}
    assert client.get(f"/api/now/attachment/{BIG}/file").status_code == 200  # blobs reseeded
    assert emu.stats()["total"] == 2  # the list and the download after the reset


def test_controls_need_admin(emu: EmulatorProc) -> None:
    assert httpx.get(f"{emu.url}/__emulator__/stats").status_code == 401
    assert (
        httpx.post(f"{emu.url}/__emulator__/reset", json={}, auth=("itil", "itil")).status_code
        == 403
    )


def test_restart_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_emulator(data_dir, "--demo", log=tmp_path / "first.log")
    try:
        with httpx.Client(base_url=first.url, auth=("admin", "admin"), timeout=30) as c:
            rec = c.post("/api/now/table/incident", json={"short_description": "kept"}).json()[
                "result"
            ]
            att = c.post(
                "/api/now/attachment/file",
                params={
                    "table_name": "incident",
                    "table_sys_id": rec["sys_id"],
                    "file_name": "kept.txt",
                },
                content=b"persisted bytes",
                headers={"Content-Type": "text/plain"},
            ).json()["result"]
    finally:
        first.stop()
    second = start_emulator(data_dir, "--demo", log=tmp_path / "second.log")
    try:
        with httpx.Client(base_url=second.url, auth=("admin", "admin"), timeout=30) as c:
            assert c.get(f"/api/now/attachment/{att['sys_id']}/file").content == b"persisted bytes"
            assert (
                c.get(f"/api/now/table/incident/{rec['sys_id']}").json()["result"][
                    "short_description"
                ]
                == "kept"
            )
            assert c.get("/api/now/attachment").headers["x-total-count"] == str(
                DEMO_TOTAL + 1
            )  # no duplicate demo
            new = c.post("/api/now/table/incident", json={}).json()["result"]
            assert new["number"] != rec["number"]  # the number counter survived too
    finally:
        second.stop()
    assert second.proc.returncode == 0
