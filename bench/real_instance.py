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

from tests.emulator_proc import start_emulator
from tests.mount_proc import start_mount
from tests.test_real_instance import seed, upload

MiB = 2**20


ROOT: Path | None = None  # --snfs-root


def mount(url: str, mnt: Path, work: Path, *args: str, **kw):
    """`start_mount`, from --snfs-root when given (`python -m snfs` imports from its cwd)."""
    here = Path.cwd()
    if ROOT is not None:
        os.chdir(ROOT)
    try:
        return start_mount(url, mnt, work, *args, **kw)
    finally:
        os.chdir(here)


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def parallel_cats(work: Path, env: dict[str, str]) -> str:
    emu = start_emulator(work / "e1", "--latency", "100", "--file-rate", str(8 * MiB))
    try:
        rec = emu.json("POST", "/api/now/table/incident", {})["result"]["sys_id"]
        names = [f"f{i}.bin" for i in range(7)]
        for n in names:
            upload(emu, rec, n, os.urandom(4 * MiB))
        m = mount(emu.url, work / "m1", work / "w1", env=env)
        try:
            os.listdir(m.path("incident", rec))
            one = timed(
                lambda: subprocess.run(
                    ["cat", str(m.path("incident", rec, names[0]))],
                    stdout=subprocess.DEVNULL,
                    check=True,
                )
            )
            paths = [str(m.path("incident", rec, n)) for n in names[1:]]
            with ThreadPoolExecutor(6) as pool:
                six = timed(
                    lambda: list(
                        pool.map(
                            lambda p: subprocess.run(
                                ["cat", p], stdout=subprocess.DEVNULL, check=True
                            ),
                            paths,
                        )
                    )
                )
            sessions = emu.stats()["sessions"]
        finally:
            m.stop()
    finally:
        emu.stop()
    return (
        f"one cat {one:.2f} s; 6 parallel cats {six:.2f} s; ratio {six / one:.2f}x; "
        f"server sessions {sessions}"
    )


def unreadable_first(work: Path, env: dict[str, str]) -> str:
    rec = uuid.uuid4().hex
    readable = [f"file{i:02d}.txt" for i in range(30)]
    seed(work / "e2", rec, [f"secret{i:04d}.txt" for i in range(2100)] + readable)
    emu = start_emulator(
        work / "e2", "--user", "reader:pw:itil", "--deny", "reader:file_nameSTARTSWITHsecret"
    )
    try:
        # --tables: the root listing (Aggregate API) is not what this measures.
        m = mount(
            emu.url,
            work / "m2",
            work / "w2",
            "--tables",
            "incident",
            user="reader",
            password="pw",
            env=env,
        )
        try:
            t = time.monotonic()
            listed = os.listdir(m.path("incident", rec))
            took = time.monotonic() - t
        finally:
            m.stop()
    finally:
        emu.stop()
    return f"{len(set(listed) & set(readable))} of 30 files listed ({took:.2f} s)"


def root_forbidden(work: Path, env: dict[str, str]) -> str:
    emu = start_emulator(work / "e3", "--demo")
    try:
        m = mount(emu.url, work / "m3", work / "w3", user="itil", password="itil", env=env)
        try:
            try:
                return f"ls / as itil: {sorted(os.listdir(m.mountpoint))}"
            except OSError as e:
                return f"ls / as itil: {e}"
        finally:
            m.stop()
    finally:
        emu.stop()


def hibernating(work: Path, env: dict[str, str]) -> str:
    emu = start_emulator(work / "e4", "--hibernating")
    try:
        t0 = time.monotonic()
        m = mount(emu.url, work / "m4", work / "w4", env=env, expect_fail=True)
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
    p = argparse.ArgumentParser()
    p.add_argument("--snfs-root", type=Path, help="run snfs mount from this checkout")
    p.add_argument("--only", help="run only this measurement (a function name)")
    a = p.parse_args()
    global ROOT
    env = dict(os.environ)
    ROOT = a.snfs_root.resolve() if a.snfs_root else None
    with tempfile.TemporaryDirectory(prefix="snfs-real-") as tmp:
        work = Path(tmp)
        for fn in (parallel_cats, unreadable_first, root_forbidden, hibernating):
            if a.only and fn.__name__ != a.only:
                continue
            try:
                print(f"{fn.__name__}: {fn(work, env)}", flush=True)
            except OSError as e:
                print(f"{fn.__name__}: failed: {e}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
