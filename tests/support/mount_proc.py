"""Run `snfs mount` as a subprocess for tests; always unmount and kill it by pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support.waiting import eventually

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_fuse() -> None:
    """Under CI a FUSE test must fail, never skip, when it cannot mount."""
    problem = None
    if not os.path.exists("/dev/fuse"):
        problem = "/dev/fuse is missing"
    elif not shutil.which("fusermount3"):
        problem = "fusermount3 is missing (apt package fuse3)"
    if problem:
        if IN_CI:
            pytest.fail(f"cannot mount: {problem}")
        pytest.skip(f"cannot mount: {problem}")


@dataclass
class MountProc:
    mountpoint: Path
    proc: subprocess.Popen
    log: Path
    spool: Path
    cache: Path

    def path(self, *parts: str) -> Path:
        return self.mountpoint.joinpath(*parts)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def peak_rss(self) -> int:
        """Peak resident memory of the daemon so far (VmHWM), in bytes."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        stop_mount(self.mountpoint, self.proc)


def stop_mount(mountpoint: Path, proc: subprocess.Popen | None, grace: float = 20.0) -> None:
    if os.path.ismount(mountpoint):
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
    if proc is not None and proc.poll() is None:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    if os.path.ismount(mountpoint) or _dead_mount(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)


def _serves(mountpoint: Path, pid: int) -> bool:
    """Is this daemon the one answering on `mountpoint` (not a stale mount left before it)?"""
    try:
        return json.loads((mountpoint / ".snfs" / "status").read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False


def _dead_mount(path: Path) -> bool:
    try:
        os.stat(path)
        return False
    except OSError:
        return True


def start_mount(
    url: str,
    mountpoint: Path,
    work: Path,
    *args: str,
    user: str = "admin",
    password: str = "admin",
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    expect_fail: bool = False,
) -> MountProc:
    require_fuse()
    mountpoint.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "mount.log"
    spool, cache = work / "spool", work / "cache"
    cmd = [
        sys.executable,
        "-m",
        "snfs",
        "mount",
        url,
        str(mountpoint),
        "--user",
        user,
        "--spool-dir",
        str(spool),
        "--cache-dir",
        str(cache),
        "-v",
        *args,
    ]
    full_env = dict(os.environ, SNFS_PASSWORD=password, **(env or {}))
    with open(log, "ab") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env
        )
    m = MountProc(mountpoint, proc, log, spool, cache)
    if expect_fail:
        return m

    def mounted() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"snfs mount exited {proc.returncode}:\n{m.log_text()}")
        return os.path.ismount(mountpoint) and _serves(mountpoint, proc.pid)

    try:
        eventually(mounted, timeout=timeout, what=f"mount on {mountpoint}\n{m.log_text()}")
        return m
    except BaseException:
        stop_mount(mountpoint, proc)
        raise


def children_rss(pid: int) -> int:
    p = psutil.Process(pid)
    return p.memory_info().rss
