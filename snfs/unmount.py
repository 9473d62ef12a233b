"""`snfs unmount MOUNTPOINT`: unmount, then name each file the instance does not have, and why.

How: before unmounting, the mount's `/.snfs/status` gives the daemon's pid, what it still owes
and where it leaves its last word (`unmount_report`); creating that file (empty, 0600) asks the
daemon for it. After the unmount the daemon tries what is owed for up to
SHUTDOWN_UPLOAD_SECONDS, writes the files it could not send into the report, and exits; this
command waits for that, prints one line per unsent file, and removes the report. Without a
report (another user's daemon, a lazy unmount) it prints what the status said before.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from snfs.options import state_home

SHUTDOWN_UPLOAD_SECONDS = 30.0  # what a daemon still tries after the unmount


def unmount(path: Path, *, lazy: bool = False) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = (
        [tool, "-u"] + (["-z"] if lazy else []) + [str(path)]
        if tool
        else ["umount"] + (["-l"] if lazy else []) + [str(path)]
    )
    subprocess.run(cmd, check=True, capture_output=True)


def unmount_report_path(pid: int) -> Path:
    """Where a daemon leaves the files it could not send, for the `snfs unmount` that asked."""
    return state_home() / "unmount" / f"{pid}.json"


def write_unmount_report(path: Path, unsent: list[dict[str, Any]]) -> None:
    """Only when `snfs unmount` created the file (it asks by creating it, empty, 0600)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # nobody asked
    with open(fd, "w") as f:
        json.dump({"unsent": unsent}, f)


def main_unmount(argv: list[str]) -> int:
    """Unmount; then name each file the instance does not have, and why. The daemon tries
    what is owed for up to SHUTDOWN_UPLOAD_SECONDS after the unmount; what is left stays in
    the spool for the next mount."""
    p = argparse.ArgumentParser(prog="snfs unmount")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("-z", "--lazy", action="store_true", help="detach even if busy")
    a = p.parse_args(argv)
    status = read_status(a.mountpoint)
    # A lazy unmount returns while the mount is busy: the daemon's end is not waited for.
    report = None if a.lazy else ask_for_report(status)
    try:
        unmount(a.mountpoint, lazy=a.lazy)
    except subprocess.CalledProcessError as e:
        if report is not None:
            report.unlink(missing_ok=True)
        print(f"snfs: cannot unmount {a.mountpoint}: {e.stderr.decode().strip()}", file=sys.stderr)
        return 1
    if status is None:
        return 0
    owed = _to_send(status.get("pending_uploads", []))
    unsent = status.get("pending_uploads", [])
    if owed:
        print(
            f"snfs: {len(owed)} file(s) not stored yet; the daemon tries for up to "
            f"{SHUTDOWN_UPLOAD_SECONDS:.0f} s more...",
            file=sys.stderr,
        )
    if report is not None:
        final = read_report(report, int(status["pid"]), wait=bool(owed))
        if final is not None:
            unsent = final
    say_unsent(unsent)
    return 0


def _to_send(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The files a later mount sends: all but desktop metadata kept local only."""
    return [f for f in files if f.get("state") != "local-only"]


def say_unsent(files: list[dict[str, Any]]) -> None:
    """One line per file the instance does not have, and why; local-only files apart, since
    no mount ever sends them (docs/WRITES.md, "Held and local-only names")."""
    for f in files:
        if f.get("state") == "local-only":
            print(f"snfs: kept local only, never sent: {f['path']}", file=sys.stderr)
    owed = _to_send(files)
    for f in owed:
        print(
            f"snfs: not sent: {f['path']}: {f['state']}: {f.get('last_error') or 'not stored yet'}",
            file=sys.stderr,
        )
    if owed:
        print(
            f"snfs: {len(owed)} file(s) kept in the spool; the next mount of this "
            "instance sends them (`snfs status` shows them)",
            file=sys.stderr,
        )


def read_status(mountpoint: Path) -> dict[str, Any] | None:
    """A live snfs mount's `/.snfs/status`, or None (not snfs, or not answering)."""
    try:
        data = json.loads((mountpoint / ".snfs" / "status").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "pid" in data else None


def ask_for_report(status: dict[str, Any] | None) -> Path | None:
    """Create the daemon's report file (empty, 0600): the daemon fills it at shutdown."""
    if status is None or not status.get("unmount_report"):
        return None
    path = Path(status["unmount_report"])
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(path, flags, 0o600))
    except OSError:
        return None
    return path


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting for its parent does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def read_report(path: Path, pid: int, *, wait: bool) -> list[dict[str, Any]] | None:
    """The daemon's list of unsent files, once it has exited (None if it did not say)."""
    deadline = time.monotonic() + (SHUTDOWN_UPLOAD_SECONDS + 15 if wait else 15)
    try:
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
        text = path.read_text()
        return list(json.loads(text)["unsent"]) if text else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        path.unlink(missing_ok=True)


main = main_unmount
