"""Figures of issue 11 (a real instance, not a kind one), measured against the emulator's
real-instance defaults:

1. 6 parallel `cat`s of 6 files vs one `cat`, on a session-locked instance with server time
   per request (`--latency`) and a bounded `/file` rate (goal: within 2.5x);
2. files listed for a record with 2,100 unreadable attachments before 30 readable ones;
3. `ls /` with the Aggregate API forbidden (user itil);
4. time for `snfs mount` to refuse a hibernating (HTML) instance (goal: under 10 s).

    .venv/bin/python -m bench.real_instance [--snfs-root DIR]

`--snfs-root` runs `snfs mount` from another checkout (to measure the code before a change);
the emulator always comes from this one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench import util
from snfs.children import snfs_command
from snfs.emulator.db import seed_attachments
from snfs.emulator.launch import Launched, launch

MiB = 2**20
REPO = Path(__file__).resolve().parent.parent
ROOT: Path | None = None  # --snfs-root


class Mount:
    """`snfs mount` of an emulator as a child process (from --snfs-root when given: `python -m
    snfs` imports from its working directory)."""

    def __init__(
        self, url: str, work: Path, *args: str, user: str = "admin", password: str = "admin"
    ) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.mountpoint, self.log = work / "mnt", work / "mount.log"
        self.mountpoint.mkdir(exist_ok=True)
        cmd = [*snfs_command("mount"), url, str(self.mountpoint), "--user", user]
        cmd += ["--spool-dir", str(work / "spool"), "--cache-dir", str(work / "cache"), *args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(self.log, "ab"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, SNFS_PASSWORD=password),
            cwd=ROOT or REPO,
        )

    def wait(self) -> Mount:
        util.wait_mounted(self.mountpoint, self.proc, log_file=self.log)
        return self

    def path(self, *parts: str) -> Path:
        return self.mountpoint.joinpath(*parts)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        util.unmount(self.mountpoint)
        util.stop_proc(self.proc)


def emulator(work: Path, *args: str) -> Launched:
    return launch(work, *args, log=work.parent / f"{work.name}.log")


def admin(emu: Launched) -> httpx.Client:
    return httpx.Client(base_url=emu.url, auth=("admin", "admin"), timeout=60)


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def cat(path: Path) -> None:
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def parallel_cats(work: Path) -> str:
    emu = emulator(work / "e1", "--latency", "100", "--file-rate", str(8 * MiB))
    try:
        with admin(emu) as api:
            rec = api.post("/api/now/table/incident", json={}).json()["result"]["sys_id"]
            names = [f"f{i}.bin" for i in range(7)]
            for n in names:
                params = {"table_name": "incident", "table_sys_id": rec, "file_name": n}
                api.post(
                    "/api/now/attachment/file",
                    params=params,
                    content=os.urandom(4 * MiB),
                    headers={"Content-Type": "application/octet-stream"},
                ).raise_for_status()
            api.post("/__emulator__/reset", json={})
        m = Mount(emu.url, work / "m1").wait()
        try:
            os.listdir(m.path("incident", rec))
            one = timed(lambda: cat(m.path("incident", rec, names[0])))
            paths = [m.path("incident", rec, n) for n in names[1:]]
            with ThreadPoolExecutor(6) as pool:
                six = timed(lambda: list(pool.map(cat, paths)))
            with admin(emu) as api:
                sessions = api.get("/__emulator__/stats").json()["sessions"]
        except subprocess.CalledProcessError:
            print(m.log_text()[-3000:], file=sys.stderr)
            raise
        finally:
            m.stop()
    finally:
        emu.stop()
    return (
        f"one cat {one:.2f} s; 6 parallel cats {six:.2f} s; ratio {six / one:.2f}x; "
        f"server sessions the mount opened: {sessions}"
    )


def unreadable_first(work: Path) -> str:
    rec = uuid.uuid4().hex
    readable = [f"file{i:02d}.txt" for i in range(30)]
    names = [f"secret{i:04d}.txt" for i in range(2100)] + readable
    seed_attachments(work / "e2", "incident", rec, names)
    emu = emulator(
        work / "e2", "--user", "reader:pw:itil", "--deny", "reader:file_nameSTARTSWITHsecret"
    )
    try:
        # --tables: the root listing (Aggregate API) is not what this measures.
        m = Mount(emu.url, work / "m2", "--tables", "incident", user="reader", password="pw")
        m.wait()
        try:
            t = time.monotonic()
            listed = os.listdir(m.path("incident", rec))
            took = time.monotonic() - t
        finally:
            m.stop()
    finally:
        emu.stop()
    return f"{len(set(listed) & set(readable))} of 30 files listed ({took:.2f} s)"


def root_forbidden(work: Path) -> str:
    emu = emulator(work / "e3", "--demo")
    try:
        m = Mount(emu.url, work / "m3", user="itil", password="itil").wait()
        try:
            try:
                return f"ls / as itil: {sorted(os.listdir(m.mountpoint))}"
            except OSError as e:
                return f"ls / as itil: {e}"
        finally:
            m.stop()
    finally:
        emu.stop()


def hibernating(work: Path) -> str:
    emu = emulator(work / "e4", "--hibernating")
    try:
        t0 = time.monotonic()
        m = Mount(emu.url, work / "m4")
        try:
            code = m.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            m.stop()
            return f"snfs mount still running after {time.monotonic() - t0:.1f} s"
        took = time.monotonic() - t0
        last = [line for line in m.log_text().splitlines() if line.strip()][-1:]
        return f"snfs mount exited {code} after {took:.2f} s: {last}"
    finally:
        emu.stop()


def main() -> None:
    global ROOT
    p = argparse.ArgumentParser()
    p.add_argument("--snfs-root", type=Path, help="run snfs mount from this checkout")
    p.add_argument("--only", help="run only this measurement (a function name)")
    a = p.parse_args()
    ROOT = a.snfs_root.resolve() if a.snfs_root else None
    with tempfile.TemporaryDirectory(prefix="snfs-real-") as tmp:
        work = Path(tmp)
        for fn in (parallel_cats, unreadable_first, root_forbidden, hibernating):
            if a.only and fn.__name__ != a.only:
                continue
            try:
                print(f"{fn.__name__}: {fn(work)}", flush=True)
            except (OSError, RuntimeError) as e:
                print(f"{fn.__name__}: failed: {e}", flush=True)


if __name__ == "__main__":
    main()
