#!/usr/bin/env python3
"""The soak from outside: random workers through a real mount of the emulator.

    python tests/soak/mount_soak.py --seed 7 --minutes 5 [--modes default,write-back]

For each mode (the default, then `--write-back`) it starts an emulator (loopback only) and a
mount of it, then for the given time runs worker threads that write, cp, overwrite, append,
fsync half way, rename (onto existing names too), save as vim and rsync do, read and rm a few
names in a few records; meanwhile it queues faults through the emulator's runtime controls
(`POST /__emulator__/faults`: 5xx, an upload stored whose answer is lost, slow uploads and
deletes, failed listings, broken downloads, 429), kills the daemon (SIGKILL by pid) and mounts
again, and stops and starts it cleanly. Then it quiesces (faults cleared, `snfs sync`, clean
unmount, mount, `snfs sync`) and checks the instance through its API against what each
worker's calls promised (tests/soak/model.py): no closed file lost, no name doubled, no torn
bytes, no removed file back, nothing owed for ever.

Bounded in time and count, it stops by itself, prints its seed first, and exits 0 when no
promise was broken, 1 with a report (each violation with the name's last operations) when one
was, 2 when the soak itself could not run. Started by path (`python -m` would import a folder
named snfs from the current directory); it puts its repository first on sys.path, so a scratch
worktree soaks its own code.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from snfs.children import snfs_command  # noqa: E402
from tests.soak.model import (  # noqa: E402
    ABSENT,
    HANG,
    UNSETTLED,
    Group,
    Violation,
    check,
)
from tests.support.emulator_proc import EmulatorProc, start_emulator  # noqa: E402
from tests.support.mount_proc import MountProc, start_mount, stop_mount  # noqa: E402

TABLE = "incident"
OP_TIMEOUT = 120.0  # one call through the mount (a cp, a sync) that takes longer has hung
MODES = {"default": [], "write-back": ["--write-back"]}

# Faults the emulator injects (docs/EMULATOR.md, "Test controls"); paths are regexes searched
# in the request path. Each: (name, spec without count).
FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("upload 500", {"method": "POST", "path": "/attachment/file$", "status": 500}),
    ("upload 503", {"method": "POST", "path": "/attachment/file$", "status": 503}),
    # The instance stores the file, the answer never arrives: an upload in doubt.
    ("upload answer lost", {"method": "POST", "path": "/attachment/file$", "drop_after_bytes": 0}),
    ("upload slow", {"method": "POST", "path": "/attachment/file$", "delay": 2.0}),
    ("delete 500", {"method": "DELETE", "path": "/attachment/[0-9a-f]{32}$", "status": 500}),
    ("delete slow", {"method": "DELETE", "path": "/attachment/[0-9a-f]{32}$", "delay": 2.0}),
    ("listing 503", {"method": "GET", "path": "/attachment$", "status": 503}),
    ("download broken", {"method": "GET", "path": "/file$", "drop_after_bytes": 100}),
    ("rate limited", {"path": "/api/now/", "status": 429, "retry_after": 1}),
]

SLOW = [f for f in FAULTS if f[0].endswith(" slow")]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def err_name(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


class _Stop(Exception):
    """Ends a write early on purpose (a failed fsync): not a failure of the write itself."""


@dataclass
class Stats:
    ops: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    errnos: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    restarts: int = 0
    notes: list[str] = field(default_factory=list)


class Soak:
    """One mode: an emulator, a mount, the workers, the faults, the kills, then the check."""

    def __init__(self, args: argparse.Namespace, mode: str, seed: int, work: Path) -> None:
        self.args, self.mode, self.seed, self.work = args, mode, seed, work
        self.rng = random.Random(f"{seed}/{mode}")
        self.stats = Stats()
        self.labels: dict[str, str] = {}  # sha256 -> label of every whole version written
        self.labels_lock = threading.Lock()
        self.groups: list[Group] = []
        self.owner: dict[tuple[str, str], Group] = {}  # (record, name) -> its worker's group
        self.up = threading.Event()  # the mount is there: workers may start a call
        self.stop = threading.Event()
        self.idle: list[threading.Event] = []
        self.mount_lock = threading.Lock()
        self.violations: list[Violation] = []
        self.emu: EmulatorProc | None = None
        self.mnt: MountProc | None = None
        self.records: list[str] = []
        self.threads: list[threading.Thread] = []

    # -- the mount ------------------------------------------------------------------------------

    def mount(self) -> MountProc:
        """Mount (again). A start that meets an injected fault (its first request answered 503,
        say) exits at once, as it should: try again, the queued faults run out."""
        assert self.emu is not None
        for attempt in range(8):
            try:
                self.mnt = start_mount(
                    self.emu.url, self.work / "mnt", self.work / "mount-work", *MODES[self.mode]
                )
                return self.mnt
            except RuntimeError as e:
                last = str(e).strip().splitlines()[-1][-300:]
                self.stats.notes.append(f"mount attempt {attempt + 1} failed: {last}")
                time.sleep(1.0)
        raise RuntimeError(f"could not mount in 8 attempts; see {self.work}/mount-work/mount.log")

    def path(self, record: str, name: str) -> Path:
        return self.work / "mnt" / TABLE / record / name

    def kill_and_remount(self) -> None:
        """SIGKILL the daemon (by pid) wherever its workers are, drop the dead mount, mount
        again: the next mount finds the spool as the killed one left it."""
        with self.mount_lock:
            assert self.mnt is not None
            self.up.clear()
            proc = self.mnt.proc
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt.mountpoint)], check=False)
            self.stats.kills += 1
            self.mount()
            self.up.set()

    def restart_cleanly(self) -> None:
        """Stop the daemon as `umount` does, once no worker is inside a call, and mount again."""
        with self.mount_lock:
            assert self.mnt is not None
            self.up.clear()
            for ev in self.idle:
                if not ev.wait(timeout=OP_TIMEOUT):
                    self.violations.append(
                        Violation(HANG, "a worker", "did not finish its call before a restart")
                    )
                    break
            stop_mount(self.mnt.mountpoint, self.mnt.proc, grace=90.0)
            self.stats.restarts += 1
            self.mount()
            self.up.set()

    # -- workers -------------------------------------------------------------------------------

    def content(self, rng: random.Random, worker: int, name: str) -> bytes:
        """Bytes no other version has: a header naming it, then random bytes of a random size."""
        n = next(self.counter)
        r = rng.random()
        size = (
            rng.randrange(0, 64)
            if r < 0.2
            else rng.randrange(64, 8192)
            if r < 0.6
            else rng.randrange(8192, 262144)
            if r < 0.96
            else rng.randrange(262144, 1_500_000)
        )
        return f"w{worker} v{n} {name}\n".encode() + rng.randbytes(size)

    def label(self, data: bytes, what: str) -> str:
        digest = sha(data)
        with self.labels_lock:
            self.labels.setdefault(digest, f"{what} ({len(data)} B, {digest[:8]})")
        return digest

    def worker(self, k: int) -> None:
        rng = random.Random(f"{self.seed}/{self.mode}/w{k}")
        idle = self.idle[k]
        mine = self.names_of(k)
        ops = 0
        while not self.stop.is_set() and ops < self.args.max_ops:
            if not self.up.wait(timeout=1.0):
                continue
            idle.clear()
            try:
                if self.stop.is_set():
                    break
                record = rng.choice(self.records)
                self.step(rng, k, record, mine)
                ops += 1
            except Exception as e:  # a defect of the soak itself: say so, keep going
                self.stats.notes.append(f"worker {k}: soak error {e!r}")
            finally:
                idle.set()
            time.sleep(rng.random() * self.args.pause)

    def names_of(self, k: int) -> list[str]:
        return [f"w{k}-{c}.txt" for c in "abc"[: self.args.names]]

    @staticmethod
    def scratch_of(k: int, name: str) -> list[str]:
        """The scratch names a vim save (backup) and an rsync (dot-name temp copy) use."""
        return [name + "~", f".{name}.soak{k:02d}"]

    def make_groups(self) -> None:
        for record in self.records:
            for k in range(self.args.workers):
                base = self.names_of(k)
                scratch = [t for n in base for t in self.scratch_of(k, n)]
                g = Group(record, base + scratch, scratch)
                self.groups.append(g)
                self.owner.update({(record, n): g for n in g.names})

    def group(self, record: str, name: str) -> Group:
        return self.owner[(record, name)]

    def step(self, rng: random.Random, k: int, record: str, mine: list[str]) -> None:
        name = rng.choice(mine)
        g = self.group(record, name)
        op = rng.choices(
            ["write", "cp", "append", "fsync", "rename", "vim", "rsync", "rm", "read"],
            weights=[20, 14, 10, 8, 16, 6, 6, 10, 10],
        )[0]
        if op in ("append", "rename", "rm", "read") and g.possible(name) == {ABSENT}:
            op = "write"
        if op == "write":
            self.put(rng, k, record, name)
        elif op == "cp":
            self.put(rng, k, record, name, via_cp=True)
        elif op == "fsync":
            self.put(rng, k, record, name, fsync_half=True)
        elif op == "append":
            self.append(rng, k, record, name)
        elif op == "rename":
            other = rng.choice([n for n in mine if n != name])
            self.rename(record, name, other)
        elif op == "vim":  # backup by rename, write anew, drop the backup
            backed_up = not g.exists(name) or self.rename(record, name, name + "~")
            if backed_up and self.put(rng, k, record, name):
                self.remove(record, name + "~")
        elif op == "rsync":  # a dot-name scratch copy renamed over the target
            tmp = self.scratch_of(k, name)[1]
            if self.put(rng, k, record, tmp):
                self.rename(record, tmp, name)
        elif op == "rm":
            self.remove(record, name)
        else:
            self.read(record, name)

    def call_ok(self, op: str) -> None:
        self.stats.ops[op] += 1

    def call_failed(self, op: str, e: BaseException) -> None:
        self.stats.ops[op] += 1
        self.stats.failed[op] += 1
        self.stats.errnos[err_name(e)] += 1

    def put(
        self,
        rng: random.Random,
        k: int,
        record: str,
        name: str,
        *,
        via_cp: bool = False,
        fsync_half: bool = False,
    ) -> bool:
        """Write a new version of `name` (create or overwrite, O_TRUNC). True if the close
        succeeded."""
        if not self.up.is_set():
            return False
        g = self.group(record, name)
        data = self.content(rng, k, name)
        op = "cp" if via_cp else "fsync" if fsync_half else "write"
        what = f"w{k} {op} #{self.stats.ops[op] + 1}"
        if via_cp:
            src = self.work / f"src-{k}"
            src.write_bytes(data)
            digest = self.label(data, what)
            try:
                r = subprocess.run(
                    ["cp", str(src), str(self.path(record, name))],
                    capture_output=True,
                    timeout=OP_TIMEOUT,
                )
            except subprocess.TimeoutExpired as e:
                self.hung(f"cp to {record}/{name}", g)
                self.call_failed(op, e)
                g.maybe(name, {digest}, f"{what}: cp hung")
                return False
            if r.returncode == 0:
                self.call_ok(op)
                g.certain(name, digest, f"{what}: cp ok -> {self.labels[digest]}")
                return True
            self.call_failed(op, OSError(errno.EIO, "cp failed"))
            # cp may have failed at open, a write or the close: only whole bytes count.
            g.maybe(
                name, {digest}, f"{what}: cp failed ({r.stderr.decode(errors='replace').strip()})"
            )
            return False
        fd = -1
        try:
            fd = os.open(self.path(record, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as e:
            self.call_failed(op, e)
            g.note(name, f"{what}: open {err_name(e)}")  # nothing written, nothing owed
            return False
        # Sync points: (bytes so far, is it the close). With fsync_half, the first half is
        # fsynced (stored) before the rest is written.
        half = len(data) // 2 if fsync_half else len(data)
        written = b""
        failure: str | None = None
        counted = False  # the call's outcome already counted (a failed fsync)
        try:
            written += self.write_all(rng, fd, data[:half])
            if fsync_half:
                digest = self.label(written, f"{what} fsynced half")
                try:
                    os.fsync(fd)
                except OSError as e:
                    # Stop here, as a careful program does; what is staged is whole.
                    g.maybe(name, {digest}, f"{what}: fsync {err_name(e)}")
                    self.call_failed(op, e)
                    counted = True
                    raise _Stop() from None
                g.certain(name, digest, f"{what}: fsync ok -> {self.labels[digest]}")
                written += self.write_all(rng, fd, data[half:])
        except _Stop:
            pass
        except OSError as e:
            failure = err_name(e)
            self.call_failed(op, e)
            g.note(name, f"{what}: write {failure} after {len(written)} of {len(data)} B")
        if failure is None:
            digest = self.label(written, what)
        try:
            os.close(fd)
        except OSError as e:
            if failure is None:
                if not counted:
                    self.call_failed(op, e)
                g.maybe(name, {digest}, f"{what}: close {err_name(e)} (its bytes may still arrive)")
            return False
        if failure is not None:
            # The bytes were never whole: the close must fail (EIO), and nothing of them may
            # reach the instance (a torn upload is then reported by the check).
            self.stats.notes.append(f"{record}/{name}: close succeeded after a failed write")
            g.note(name, f"{what}: close ok after a failed write")
            return False
        if not counted:
            self.call_ok(op)
        g.certain(name, digest, f"{what}: close ok -> {self.labels[digest]}")
        return True

    def write_all(self, rng: random.Random, fd: int, data: bytes) -> bytes:
        """Write all of `data` in chunks of random sizes (an OSError leaves it part written)."""
        view = memoryview(data)
        while view:
            n = os.write(fd, view[: rng.choice((4096, 65536, 131072))])
            view = view[n:]
        return data

    def append(self, rng: random.Random, k: int, record: str, name: str) -> None:
        """Read the file through the mount, append to it, close: the new version is what was
        read plus what was appended."""
        if not self.up.is_set():
            return
        g = self.group(record, name)
        path = self.path(record, name)
        what = f"w{k} append #{self.stats.ops['append'] + 1}"
        try:
            base = path.read_bytes()
        except OSError as e:
            self.call_failed("append", e)
            g.note(name, f"{what}: read {err_name(e)}")
            return
        self.check_read(g, name, base, what)
        extra = f"+w{k} {what}\n".encode() + rng.randbytes(rng.randrange(0, 4096))
        data = base + extra
        digest = self.label(data, what)
        fd = -1
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            view = memoryview(extra)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as e:
            self.call_failed("append", e)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            g.note(name, f"{what}: {err_name(e)}")
            return
        try:
            os.close(fd)
        except OSError as e:
            self.call_failed("append", e)
            g.maybe(name, {digest}, f"{what}: close {err_name(e)}")
            return
        self.call_ok("append")
        g.certain(name, digest, f"{what}: close ok -> {self.labels[digest]}")

    def rename(self, record: str, src: str, dst: str) -> bool:
        if not self.up.is_set():
            return False
        g = self.group(record, src)
        note = f"mv {src} {dst}"
        try:
            os.rename(self.path(record, src), self.path(record, dst))
        except OSError as e:
            self.call_failed("rename", e)
            g.renamed(src, dst, False, f"{note}: {err_name(e)}")
            return False
        self.call_ok("rename")
        g.renamed(src, dst, True, f"{note}: ok")
        return True

    def remove(self, record: str, name: str) -> None:
        if not self.up.is_set():
            return
        g = self.group(record, name)
        try:
            os.unlink(self.path(record, name))
        except FileNotFoundError as e:
            if g.exists(name):
                self.call_failed("rm", e)
                g.maybe(name, {ABSENT}, "rm: ENOENT though it exists")
                self.stats.notes.append(f"{record}/{name}: rm answered ENOENT for a closed file")
            return
        except OSError as e:
            self.call_failed("rm", e)
            g.maybe(name, {ABSENT}, f"rm: {err_name(e)}")
            return
        self.call_ok("rm")
        g.certain(name, ABSENT, "rm: ok")

    def read(self, record: str, name: str) -> None:
        if not self.up.is_set():
            return
        g = self.group(record, name)
        try:
            data = self.path(record, name).read_bytes()
        except OSError as e:
            self.call_failed("read", e)
            return
        self.call_ok("read")
        self.check_read(g, name, data, "read")

    def check_read(self, g: Group, name: str, data: bytes, what: str) -> None:
        """A read through the mount should show a version the name may hold. Only noted: a
        file kept after a kill mid-write (blocked) shows its bytes as they were."""
        if sha(data) not in g.possible(name):
            self.stats.notes.append(
                f"{g.record}/{name}: {what} read {len(data)} B that are not a version it"
                f" may hold ({sha(data)[:8]})"
            )

    def hung(self, what: str, g: Group | None = None) -> None:
        self.violations.append(
            Violation(HANG, what, f"no answer in {OP_TIMEOUT:g} s", list(g.log) if g else [])
        )

    # -- faults and kills ----------------------------------------------------------------------

    def chaos(self, deadline: float) -> None:
        """Queue faults every few seconds; kill or restart the daemon at random times."""
        assert self.emu is not None
        kills, restarts = self.args.kills, self.args.restarts
        span = max(1.0, deadline - time.monotonic())
        events = sorted(
            [(time.monotonic() + self.rng.uniform(0.1, 0.9) * span, "kill") for _ in range(kills)]
            + [
                (time.monotonic() + self.rng.uniform(0.1, 0.9) * span, "restart")
                for _ in range(restarts)
            ]
        )
        next_fault = time.monotonic() + self.rng.uniform(0, self.args.fault_every)
        while not self.stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            if events and events[0][0] <= now:
                self.kill_or_restart(events.pop(0)[1])
                continue
            if self.args.fault_every > 0 and now >= next_fault:
                next_fault = self.queue_fault(now)
            time.sleep(0.05)
        self.catch_up([what for _, what in events])

    def queue_fault(self, now: float) -> float:
        """Queue one random fault; when the next is due."""
        assert self.emu is not None
        name, spec = self.rng.choice(FAULTS)
        try:
            self.emu.fault(count=self.rng.randint(1, 3), **spec)
            self.stats.faults[name] += 1
        except (OSError, AssertionError) as e:
            self.stats.notes.append(f"could not queue fault {name}: {e!r}")
        return now + self.rng.uniform(0.3, 1.7) * self.args.fault_every

    def catch_up(self, events: list[str]) -> None:
        """A loaded machine can leave the driver behind its plan (a remount that took long
        pushes the next event past the deadline; the workers made few calls). It still makes
        every kill and restart asked, then lets the workers run on until they have made
        `--min-calls` calls and `--min-faults` faults were queued (for at most a minute
        more): a short run always exercises what it claims. This measures the driver, never
        the product."""
        for what in events:
            if self.stop.is_set():
                return
            self.kill_or_restart(what)
        late = time.monotonic() + 60.0
        next_fault = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < late:
            short_of_faults = sum(self.stats.faults.values()) < self.args.min_faults
            if sum(self.stats.ops.values()) >= self.args.min_calls and not short_of_faults:
                return
            now = time.monotonic()
            if short_of_faults and self.args.fault_every > 0 and now >= next_fault:
                next_fault = self.queue_fault(now)
            time.sleep(0.05)

    def kill_or_restart(self, what: str) -> None:
        assert self.emu is not None
        if what == "kill":
            # Slow the next requests first, so the kill lands while they are in flight (an
            # upload, a rename's copy, a delete), not between calls.
            name, spec = self.rng.choice(SLOW)
            self.emu.fault(count=4, **spec)
            self.stats.faults[name] += 1
            time.sleep(self.rng.uniform(0.2, 2.0))
            self.kill_and_remount()
        else:
            self.restart_cleanly()

    # -- quiesce and check ---------------------------------------------------------------------

    def sync(self) -> dict[str, Any] | None:
        """`snfs sync --json` (a child process, so a hang is bounded); None if it hung."""
        assert self.mnt is not None
        try:
            r = subprocess.run(
                snfs_command("sync", str(self.mnt.mountpoint), "--json"),
                capture_output=True,
                timeout=OP_TIMEOUT,
                cwd=ROOT,
            )
        except subprocess.TimeoutExpired:
            self.hung("snfs sync")
            return None
        try:
            answer: dict[str, Any] = json.loads(r.stdout)
            return answer
        except ValueError:
            self.stats.notes.append(f"snfs sync exited {r.returncode}: {r.stderr[-300:]!r}")
            return {"synced": False, "pending_uploads": []}

    def settle(self) -> list[dict[str, Any]]:
        """Sync until nothing is owed (a few tries: an upload may be waiting on a fault's
        Retry-After); what is left."""
        left: list[dict[str, Any]] = []
        for _ in range(4):
            answer = self.sync()
            if answer is None:
                return []
            left = answer.get("pending_uploads", [])
            if answer.get("synced") and not left:
                return []
            if all(f.get("state") == "blocked" for f in left):
                return left
            time.sleep(3)
        return left

    def quiesce(self) -> list[dict[str, Any]]:
        assert self.emu is not None and self.mnt is not None
        self.emu.json("DELETE", "/__emulator__/faults")
        self.settle()
        stop_mount(self.mnt.mountpoint, self.mnt.proc, grace=90.0)
        if self.mnt.proc.poll() is None:
            self.hung("clean unmount")
        self.mount()
        left = self.settle()
        for f in left:
            where = str(f.get("path", "?"))
            if f.get("state") == "blocked":
                self.stats.notes.append(f"kept, not sent (blocked): {where}: {f.get('last_error')}")
            else:
                self.violations.append(
                    Violation(
                        UNSETTLED,
                        where,
                        f"still {f.get('state')} after faults stopped, a remount and sync:"
                        f" {f.get('last_error') or 'not stored yet'}",
                    )
                )
        return left

    def instance(self) -> dict[str, list[tuple[str, str]]]:
        assert self.emu is not None
        out: dict[str, list[tuple[str, str]]] = {r: [] for r in self.records}
        query = quote(f"table_name={TABLE}^table_sys_idIN{','.join(self.records)}")
        rows = self.emu.json(
            "GET", f"/api/now/attachment?sysparm_limit=100000&sysparm_query={query}"
        )["result"]
        for a in rows:
            out.setdefault(a["table_sys_id"], []).append((a["file_name"], a["hash"]))
        return out

    def plant(self) -> None:
        """Add an attachment no worker made (--plant): the check must report it."""
        assert self.emu is not None
        name = "w0-a.txt"
        status, _, body = self.emu.request(
            "POST",
            f"/api/now/attachment/file?table_name={TABLE}&table_sys_id={self.records[0]}"
            f"&file_name={quote(name)}",
            b"planted by the soak",
            headers={"Content-Type": "text/plain"},
        )
        assert status == 201, (status, body[:200])
        self.stats.notes.append(f"planted a second {name} in {self.records[0]}")

    # -- one mode, start to end ----------------------------------------------------------------

    def run(self) -> None:
        self.counter = itertools.count(1)
        self.emu = start_emulator(
            self.work / "emu", *self.args.emulator_arg, log=self.work / "emulator.log"
        )
        try:
            self.records = [
                self.emu.json("POST", f"/api/now/table/{TABLE}", {"short_description": "soak"})[
                    "result"
                ]["sys_id"]
                for _ in range(self.args.records)
            ]
            self.make_groups()
            self.mount()
            self.up.set()
            deadline = time.monotonic() + self.args.minutes * 60
            self.idle = [threading.Event() for _ in range(self.args.workers)]
            for ev in self.idle:
                ev.set()
            self.threads = threads = [
                threading.Thread(target=self.worker, args=(k,), daemon=True, name=f"w{k}")
                for k in range(self.args.workers)
            ]
            for t in threads:
                t.start()
            self.chaos(deadline)
            self.stop.set()
            for t in threads:
                t.join(timeout=OP_TIMEOUT)
                if t.is_alive():
                    self.hung(f"worker {t.name}")
            if any(t.is_alive() for t in threads):
                self.kill_and_remount()  # unblocks them (ENOTCONN); the check goes on
            blocked = {
                tuple(str(f.get("path", "")).rsplit("/", 2)[-2:])
                for f in self.quiesce()
                if f.get("state") == "blocked"
            }
            if self.args.plant:
                self.plant()
            self.violations += check(
                TABLE,
                self.groups,
                self.instance(),
                self.labels,
                blocked,  # type: ignore[arg-type]
            )
            self.compare_view()
        finally:
            self.stop.set()
            for t in self.threads:  # out of the mount before unmounting it (else EBUSY)
                t.join(timeout=15)
            if self.mnt is not None:
                stop_mount(self.mnt.mountpoint, self.mnt.proc, grace=60.0)
            self.emu.stop()

    def compare_view(self) -> None:
        """The mount's listing after the last mount, against the instance (noted, not judged:
        a file kept locally is listed and not on the instance)."""
        inst = self.instance()
        for record in self.records:
            try:
                local = set(os.listdir(self.path(record, "")))
            except OSError as e:
                self.stats.notes.append(f"ls {record}: {err_name(e)}")
                continue
            remote = {n for n, _ in inst.get(record, [])}
            if local != remote:
                self.stats.notes.append(
                    f"ls {record} differs from the instance: only on the mount "
                    f"{sorted(local - remote)}, only on the instance {sorted(remote - local)}"
                )

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "mode": self.mode,
            "seed": self.seed,
            "ops": sum(s.ops.values()),
            "failed": sum(s.failed.values()),
            "by_op": dict(s.ops),
            "failed_by_op": dict(s.failed),
            "errnos": dict(s.errnos),
            "faults": sum(s.faults.values()),
            "faults_by_kind": dict(s.faults),
            "kills": s.kills,
            "restarts": s.restarts,
            "names": len(self.owner),
            "versions": len(self.labels),
            "violations": [
                {"kind": v.kind, "where": v.where, "detail": v.detail, "history": v.history}
                for v in self.violations
            ],
            "notes": s.notes,
        }


def report(summary: dict[str, Any], seed: int) -> None:
    print(
        f"soak {summary['mode']}: {summary['ops']} calls ({summary['failed']} failed), "
        f"{summary['faults']} faults queued, {summary['kills']} kills, "
        f"{summary['restarts']} clean restarts, {summary['names']} names, "
        f"{summary['versions']} versions written"
    )
    print(f"  calls: {summary['by_op']}  failed: {summary['failed_by_op']}")
    print(f"  errnos: {summary['errnos']}  faults: {summary['faults_by_kind']}")
    for note in summary["notes"][:20]:
        print(f"  note: {note}")
    if len(summary["notes"]) > 20:
        print(f"  ... and {len(summary['notes']) - 20} more notes")
    for v in summary["violations"]:
        print(
            f"VIOLATION [{v['kind']}] ({summary['mode']}, seed {seed}) {v['where']}: {v['detail']}"
        )
        for h in v["history"]:
            print(f"    {h}")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Random workers through a real mount of the emulator, with faults and "
        "daemon kills; the instance checked against what each close promised."
    )
    p.add_argument("--seed", type=int, default=None, help="default: $SNFS_SOAK_SEED or random")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="per mode (default: $SNFS_SOAK_MINUTES or 1); fractions allowed",
    )
    p.add_argument(
        "--modes", default="default,write-back", help="comma list of: " + ",".join(MODES)
    )
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--records", type=int, default=3)
    p.add_argument("--names", type=int, default=3, choices=(2, 3), help="per worker")
    p.add_argument("--kills", type=int, default=None, help="SIGKILLs per mode (default 1 + min/4)")
    p.add_argument("--restarts", type=int, default=None, help="clean restarts per mode")
    p.add_argument("--fault-every", type=float, default=1.5, metavar="S", help="0: no faults")
    p.add_argument("--max-ops", type=int, default=100000, help="per worker and mode")
    p.add_argument(
        "--min-calls",
        type=int,
        default=0,
        help="run on past --minutes (at most a minute) until the workers made this many calls",
    )
    p.add_argument(
        "--min-faults",
        type=int,
        default=0,
        help="run on past --minutes (at most a minute) until this many faults were queued",
    )
    p.add_argument("--pause", type=float, default=0.02, metavar="S", help="max between calls")
    p.add_argument(
        "--emulator-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed to `snfs emulator` (repeat; e.g. --emulator-arg=--release=australia for "
        "PATCH renames instead of copy-then-delete)",
    )
    p.add_argument("--json", type=Path, help="write the summaries here")
    p.add_argument("--workdir", type=Path, help="default: a new directory under $TMPDIR")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, spool)")
    p.add_argument("--plant", action="store_true", help="add a stray duplicate: must be reported")
    a = p.parse_args(argv)
    if a.seed is None:
        env = os.environ.get("SNFS_SOAK_SEED", "")
        a.seed = int(env) if env.strip() else random.SystemRandom().randrange(1 << 31)
    if a.minutes is None:
        env = os.environ.get("SNFS_SOAK_MINUTES", "")
        a.minutes = float(env) if env.strip() else 1.0
    if a.kills is None:
        a.kills = 1 + int(a.minutes / 2)
    if a.restarts is None:
        a.restarts = 1 + int(a.minutes / 8)
    unknown = set(a.modes.split(",")) - set(MODES)
    if unknown:
        p.error(f"unknown mode(s) {sorted(unknown)}; known: {sorted(MODES)}")
    return a


class Stopped(Exception):
    """SIGTERM or SIGINT: end the run, still unmounting and stopping what it started."""


def _stop(signum: int, frame: Any) -> None:
    # Once: a second signal must not cut the clean-up (unmount, emulator) short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Stopped(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    a = parse(argv)
    # Installed even where the shell ignores SIGINT (a background job): the run is always left
    # through its `finally`, which unmounts and stops the emulator by pid.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"soak: seed {a.seed}, {a.minutes:g} min per mode, modes {a.modes}", flush=True)
    # Children (`python -m snfs`) import this tree's package, whatever the venv points at.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    # ... and `-m` puts the current directory before PYTHONPATH: a soak started from another
    # checkout (its folder `snfs`) mounted that checkout's code and judged it as this one's.
    a.workdir = a.workdir.resolve() if a.workdir else None
    a.json = a.json.resolve() if a.json else None
    os.chdir(ROOT)
    base = a.workdir or Path(tempfile.mkdtemp(prefix="snfs-soak-"))
    summaries = []
    failed = broken = False
    for mode in a.modes.split(","):
        soak = Soak(a, mode, a.seed, base / mode)
        try:
            soak.run()
        except Stopped as e:
            print(f"soak {mode}: stopped by {e}; work directory kept: {base}", file=sys.stderr)
            return 2
        except Exception as e:
            print(f"soak {mode}: could not run: {e!r}", file=sys.stderr)
            broken = True
        s = soak.summary()
        summaries.append(s)
        report(s, a.seed)
        failed |= bool(s["violations"])
    text = json.dumps({"seed": a.seed, "modes": summaries}, indent=2)
    (base / "soak.json").write_text(text)  # kept with the logs when a run fails
    if a.json:
        a.json.write_text(text)
    if broken:
        print(f"soak: could not run to the end (seed {a.seed}); work directory kept: {base}")
        return 2
    if failed:
        n = sum(len(s["violations"]) for s in summaries)
        print(f"soak: {n} violation(s); seed {a.seed}; logs and spool in {base}")
        return 1
    print(f"soak: no violation (seed {a.seed})")
    if not a.keep and a.workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
