"""snfs against an instance that is not kind: the emulator's defaults behave like a real
ServiceNow instance (one transaction at a time per session cookie, sysparm_limit before ACLs,
the Aggregate API refused without read on sys_attachment, transaction quotas, HTML pages from
a hibernating instance, MFA, rate limits). Each test goes through a real mount (or the real
client) and checks the outcome through the instance's own API."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import trio

from snfs.backends.servicenow.client import AttachmentClient, ClientConfig
from snfs.emulator.db import seed_attachments
from tests.support.emulator_proc import EmulatorProc
from tests.support.mount_proc import MountProc

KB = 1024


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_record(emu: EmulatorProc, table: str = "incident") -> str:
    return emu.json("POST", f"/api/now/table/{table}", {"short_description": "t"})["result"][
        "sys_id"
    ]


def upload(emu: EmulatorProc, record: str, name: str, data: bytes) -> dict:
    status, _, raw = emu.request(
        "POST",
        f"/api/now/attachment/file?table_name=incident&table_sys_id={record}&file_name={name}",
        data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 201, raw
    return json.loads(raw)["result"]


def seed(data_dir: Path, record: str, names: list[str]) -> None:
    """Thousands of attachment rows straight into the database before the emulator starts."""
    seed_attachments(data_dir, "incident", record, names)


def status_of(m: MountProc) -> dict:
    return json.loads(m.path(".snfs", "status").read_text())


# -- sessions ------------------------------------------------------------------------------------


def test_emulator_runs_one_transaction_per_session(
    emulator_factory: Callable[..., EmulatorProc],
) -> None:
    """A request carrying a busy session's cookie waits for that session's transaction; one
    without a cookie opens a new session and does not wait."""
    emu = emulator_factory("--file-rate", "400000")
    rec = new_record(emu)
    big = upload(emu, rec, "slow.bin", os.urandom(400 * KB))  # about 1 s to send
    done: list[str] = []
    halfway: list[str] = []  # what had finished when half the slow body had arrived
    started, new_done = threading.Event(), threading.Event()
    with httpx.Client(base_url=emu.url, auth=("admin", "admin"), timeout=30) as a:
        a.get("/api/now/attachment", params={"sysparm_limit": "1"})  # gets JSESSIONID
        cookie = a.cookies["JSESSIONID"]

        def slow() -> None:
            got = 0
            with a.stream("GET", f"/api/now/attachment/{big['sys_id']}/file") as resp:
                for chunk in resp.iter_bytes():
                    got += len(chunk)
                    started.set()
                    if got >= 200 * KB and not halfway:
                        new_done.wait(10)
                        halfway.extend(done or ["nothing"])
            done.append("slow download")

        def same_session() -> None:
            started.wait(10)
            httpx.get(
                f"{emu.url}/api/now/attachment?sysparm_limit=1",
                auth=("admin", "admin"),
                cookies={"JSESSIONID": cookie},
            )
            done.append("same session")

        threads = [threading.Thread(target=f) for f in (slow, same_session)]
        for t in threads:
            t.start()
        started.wait(10)
        httpx.get(f"{emu.url}/api/now/attachment?sysparm_limit=1", auth=("admin", "admin"))
        done.append("new session")
        new_done.set()
        for t in threads:
            t.join(30)
    # Half-way through the slow body, the cookie-less request (a new session) had its answer
    # and the one in the busy session was still queued; it got its answer in the end.
    assert halfway == ["new session"]
    assert sorted(done) == ["new session", "same session", "slow download"]


def test_parallel_reads_use_a_pool_of_sessions(
    emulator_factory: Callable[..., EmulatorProc], mount_factory: Callable[..., MountProc]
) -> None:
    """Six parallel reads on a session-locked instance run in several sessions (one queue per
    session would serialize them), and the mount never opens more sessions than its slots."""
    emu = emulator_factory("--file-rate", "2000000")
    rec = new_record(emu)
    files = {f"f{i}.bin": os.urandom(512 * KB) for i in range(6)}
    for name, data in files.items():
        upload(emu, rec, name, data)
    emu.reset_stats()
    m = mount_factory(emu, "--max-in-flight", "4")
    paths = [m.path("incident", rec, n) for n in files]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(Path.read_bytes, paths))
    assert got == list(files.values())
    stats = emu.stats()
    assert stats["by_route"]["GET /attachment/{sys_id}/file"] == 6
    assert 2 <= stats["sessions"] <= 4


# -- listings ------------------------------------------------------------------------------------


def test_record_listing_pages_past_unreadable_attachments(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorProc],
    mount_factory: Callable[..., MountProc],
) -> None:
    """2,100 attachments the user cannot read before 30 it can: sysparm_limit is applied before
    ACLs, so the first pages come back empty; all 30 files are listed all the same."""
    rec = uuid.uuid4().hex
    readable = [f"file{i:02d}.txt" for i in range(30)]
    data = tmp_path / "seeded"
    seed(data, rec, [f"secret{i:04d}.txt" for i in range(2100)] + readable)
    emu = emulator_factory(
        "--user", "reader:pw:itil", "--deny", "reader:file_nameSTARTSWITHsecret", data_dir=data
    )
    status, headers, raw = emu.request(
        "GET",
        f"/api/now/attachment?sysparm_query=table_sys_id={rec}&sysparm_limit=1000",
        auth=("reader", "pw"),
    )
    assert status == 200 and json.loads(raw)["result"] == []  # an empty first page ...
    assert headers["x-total-count"] == "2130" and 'rel="next"' in headers["link"]  # ... not done
    m = mount_factory(emu, user="reader", password="pw", name="reader")
    assert sorted(os.listdir(m.path("incident", rec))) == readable


def test_error_in_a_200_list_is_a_failure_not_a_listing(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorProc],
    mount_factory: Callable[..., MountProc],
) -> None:
    """A list cancelled by the transaction quota answers 200 with a partial result, `error` and
    "status": "failure": the mount retries, then answers EIO with one log line; it never shows
    the partial list as the record's files."""
    rec = uuid.uuid4().hex
    data = tmp_path / "seeded"
    seed(data, rec, [f"f{i:03d}.txt" for i in range(100)])
    emu = emulator_factory("--quota", "0.3", "--row-time", "10", data_dir=data)
    status, _, raw = emu.request(
        "GET", f"/api/now/attachment?sysparm_query=table_sys_id={rec}&sysparm_limit=1000"
    )
    body = json.loads(raw)
    assert status == 200 and body["status"] == "failure" and 0 < len(body["result"]) < 100
    # --tables: no root listing (which the mount warms at start, and which this quota cuts
    # too, with its own log lines), so the log shows this one listing's failure.
    m = mount_factory(emu, "--tables", "incident")
    with pytest.raises(OSError) as e:
        os.listdir(m.path("incident", rec))
    assert e.value.errno == errno.EIO
    lines = [line for line in m.log_text().splitlines() if "maximum execution time" in line]
    assert len(lines) == 1, m.log_text()


def test_root_listing_without_the_aggregate_api(
    emulator_factory: Callable[..., EmulatorProc], mount_factory: Callable[..., MountProc]
) -> None:
    """The Aggregate API is refused (403) to a user without read on sys_attachment: `ls /`
    still lists tables (those of recent attachments), and a path below a table never asks for
    the root listing at all."""
    emu = emulator_factory("--demo")
    status, _, _ = emu.request(
        "GET", "/api/now/stats/sys_attachment?sysparm_count=true", auth=("itil", "itil")
    )
    assert status == 403
    inc = next(a for a in emu.attachments() if a["table_name"] == "incident")
    m = mount_factory(emu, user="itil", password="itil")
    emu.reset_stats()
    names = os.listdir(m.path("incident", inc["table_sys_id"]))
    assert inc["file_name"] in names
    assert emu.stats()["by_route"]["GET /stats/{table}"] == 0
    root = os.listdir(m.mountpoint)
    assert "incident" in root and "hr_case" not in root
    assert "the Aggregate API failed" in m.log_text()


# -- start-up ------------------------------------------------------------------------------------


def test_mount_refuses_a_hibernating_instance(
    emulator_factory: Callable[..., EmulatorProc], mount_factory: Callable[..., MountProc]
) -> None:
    emu = emulator_factory("--hibernating")
    status, headers, raw = emu.request("GET", "/api/now/attachment?sysparm_limit=1")
    assert status == 200 and "html" in headers["content-type"] and b"<html" in raw
    m = mount_factory(emu, expect_fail=True)
    assert m.proc.wait(timeout=60) != 0
    assert not os.path.ismount(m.mountpoint)
    assert "the instance answered with an HTML page" in m.log_text()


def test_mount_says_mfa(
    emulator_factory: Callable[..., EmulatorProc], mount_factory: Callable[..., MountProc]
) -> None:
    emu = emulator_factory("--user", "alice:s3cret-mfa:admin", "--mfa-user", "alice")
    status, headers, _ = emu.request("GET", "/api/now/attachment", auth=("alice", "s3cret-mfa"))
    assert status == 401 and headers["x-mfa_token"] == "invalid"
    m = mount_factory(emu, user="alice", password="s3cret-mfa", expect_fail=True)
    assert m.proc.wait(timeout=60) != 0
    text = m.log_text()
    assert "multi-factor authentication" in text and "s3cret-mfa" not in text


# -- content -------------------------------------------------------------------------------------


def test_html_page_instead_of_a_file_is_eio_never_content(
    emulator_factory: Callable[..., EmulatorProc], mount_factory: Callable[..., MountProc]
) -> None:
    """An instance that falls asleep answers /file with a 200 HTML page: reading is EIO with a
    log line naming it, nothing is cached, and an append does not replace the attachment."""
    emu = emulator_factory()
    rec = new_record(emu)
    data = b"the real content\n" * 100
    att = upload(emu, rec, "notes.txt", data)
    m = mount_factory(emu)
    path = m.path("incident", rec, "notes.txt")
    assert os.listdir(path.parent) == ["notes.txt"]
    emu.json("POST", "/__emulator__/state", {"hibernate": True})
    try:
        with pytest.raises(OSError) as e:
            path.read_bytes()
        assert e.value.errno == errno.EIO
        with pytest.raises(OSError), open(path, "ab") as f:
            f.write(b"appended\n")
    finally:
        emu.json("POST", "/__emulator__/state", {"hibernate": False})
    assert "not the attachment" in m.log_text() and "HTML page" in m.log_text()
    assert path.read_bytes() == data  # the page was never cached as the file
    rows = emu.attachments(f"table_sys_id={rec}")
    assert [(r["sys_id"], r["hash"]) for r in rows] == [(att["sys_id"], digest(data))]


def test_download_cut_by_the_quota_ends_in_eio(
    emulator_factory: Callable[..., EmulatorProc], mount_factory: Callable[..., MountProc]
) -> None:
    """Without Range, a download the transaction quota cuts at the same point every time can
    never finish: EIO, and one log line naming the quota (not one per attempt, and no second
    round of attempts for the kernel's read-ahead)."""
    emu = emulator_factory("--quota", "0.5", "--file-rate", "400000")
    rec = new_record(emu)
    upload(emu, rec, "big.bin", os.urandom(600 * KB))  # 1.5 s at 400 kB/s
    m = mount_factory(emu)
    fd = os.open(m.path("incident", rec, "big.bin"), os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.read(fd, 4096)  # one read: one download (the kernel's read-ahead aside)
    finally:
        os.close(fd)
    assert e.value.errno == errno.EIO
    text = m.log_text()
    lines = [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line]
    assert len(lines) == 1 and "transaction quota" in lines[0], text
    assert emu.stats()["by_route"]["GET /attachment/{sys_id}/file"] == 6  # the retry budget
    assert len(emu.attachments(f"table_sys_id={rec}")) == 1


def test_resume_budget_counts_from_the_last_progress(
    emulator_factory: Callable[..., EmulatorProc],
) -> None:
    """With Range, each attempt cut by the quota gets further: a download that takes longer
    than the whole retry budget still finishes, because the budget restarts with progress."""
    emu = emulator_factory("--range", "--quota", "0.3", "--file-rate", "500000")
    rec = new_record(emu)
    data = os.urandom(800 * KB)  # about 1.6 s at 500 kB/s: at least 5 cuts
    att = upload(emu, rec, "big.bin", data)

    async def main() -> bytes:
        config = ClientConfig(
            base_url=emu.url,
            auth=httpx.BasicAuth("admin", "admin"),
            retry_total_seconds=1.0,
            retry_attempts=3,
            retry_base_delay=0.05,
        )
        async with AttachmentClient(config) as c:
            return b"".join([chunk async for chunk in c.stream(att["sys_id"])])

    assert trio.run(main) == data


def test_image_field_tables_are_read_only(
    emulator_factory: Callable[..., EmulatorProc], mount_factory: Callable[..., MountProc]
) -> None:
    """`ZZ_YY<table>` attachments belong to image fields: a file created there would be an
    orphan no field points at, so creating one is EROFS and nothing reaches the instance."""
    emu = emulator_factory("--demo")
    field = next(a for a in emu.attachments() if a["table_name"] == "ZZ_YYincident")
    m = mount_factory(emu)
    folder = m.path("ZZ_YYincident", field["table_sys_id"])
    assert field["file_name"] in os.listdir(folder)
    with pytest.raises(OSError) as e:
        (folder / "new.png").write_bytes(b"png")
    assert e.value.errno == errno.EROFS
    rows = emu.attachments(f"table_name=ZZ_YYincident^table_sys_id={field['table_sys_id']}")
    assert [r["sys_id"] for r in rows] == [field["sys_id"]]


def test_rate_limited_instance_is_waited_for(
    emulator_factory: Callable[..., EmulatorProc], mount_factory: Callable[..., MountProc]
) -> None:
    """429 with Retry-After and X-RateLimit-*: the mount waits as told and every listing
    succeeds."""
    emu = emulator_factory("--rate-limit", "8/2", "--user", "setup:pw:admin")
    setup = ("setup", "pw")  # its own rate limit window, apart from the mount's user

    def api(method: str, path: str, body: object = None, **kw: object) -> dict:
        while True:  # the test's own set-up waits as told, too
            status, headers, raw = emu.request(method, path, body, auth=setup, **kw)
            if status != 429:
                assert 200 <= status < 300, raw
                return json.loads(raw)["result"]
            threading.Event().wait(float(headers["retry-after"]))

    records = [api("POST", "/api/now/table/incident", {})["sys_id"] for _ in range(9)]
    for rec in records[:3]:
        api(
            "POST",
            f"/api/now/attachment/file?table_name=incident&table_sys_id={rec}&file_name=a.txt",
            b"a",
            headers={"Content-Type": "text/plain"},
        )
    seen = [emu.request("GET", "/api/now/attachment?sysparm_limit=1") for _ in range(10)]
    status, headers, _ = seen[-1]
    assert status == 429
    assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-limit"] == "8"
    assert headers["x-ratelimit-reset"] and headers["x-ratelimit-rule"]
    m = mount_factory(emu)
    for rec in records:  # 9 records, each listing a request: over 8 per 2 s
        assert os.listdir(m.path("incident", rec)) == (["a.txt"] if rec in records[:3] else [])
    assert status_of(m)["requests"]["retries"] >= 1


def test_table_api_list_cut_by_the_quota(emulator_factory: Callable[..., EmulatorProc]) -> None:
    """The Table API's lists run under the same quota: 200, partial result, error, failure."""
    emu = emulator_factory("--quota", "0.2", "--row-time", "50")
    for _ in range(6):
        new_record(emu)
    status, _, raw = emu.request("GET", "/api/now/table/incident?sysparm_limit=100")
    body = json.loads(raw)
    assert status == 200 and body["status"] == "failure"
    assert "maximum execution time" in body["error"]["message"] and len(body["result"]) < 6
