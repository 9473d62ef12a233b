"""Telling others: the systemd notify protocol (sd_notify(3)) without a dependency, and
desktop notifications (`notify-send`) for uploads that fail where no program can be told.

Under `Type=notify`, systemd passes `$NOTIFY_SOCKET`: a path, or `@name` for a socket in the
abstract namespace. Each message is one datagram of newline-separated `KEY=value` lines. When
the variable is unset (not under systemd) every function here is a no-op that returns False;
nothing here ever raises.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time

log = logging.getLogger("snfs.notify")

__all__ = ["desktop", "notify", "ready", "status", "stopping", "reloading"]

DESKTOP_TIMEOUT = 10.0  # seconds a notify-send may run before it is killed


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not implemented


def notify(*lines: str) -> bool:
    """Send `lines` as one datagram to `$NOTIFY_SOCKET`; False if unset or undeliverable."""
    value = os.environ.get("NOTIFY_SOCKET")
    if not value:
        return False
    address = _address(value)
    if address is None:
        log.debug("NOTIFY_SOCKET=%s: unsupported address, not notifying", value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as e:
        log.debug("NOTIFY_SOCKET=%s: cannot notify: %s", value, e)
        return False
    return True


def _one_line(text: str) -> str:
    """A status is one line: a newline in it would start a new (forged) assignment."""
    return " ".join(text.splitlines())


def ready(status_text: str = "") -> bool:
    """The service is up: `READY=1`, `STATUS=...`, `MAINPID=<this pid>`."""
    lines = ["READY=1"]
    if status_text:
        lines.append(f"STATUS={_one_line(status_text)}")
    lines.append(f"MAINPID={os.getpid()}")
    return notify(*lines)


def status(text: str) -> bool:
    """Free-form status shown by `systemctl status`."""
    return notify(f"STATUS={_one_line(text)}")


def stopping(status_text: str = "") -> bool:
    """Shutdown has begun (so systemd does not treat the exit that follows as a crash)."""
    lines = ["STOPPING=1"]
    if status_text:
        lines.append(f"STATUS={_one_line(status_text)}")
    return notify(*lines)


def reloading(status_text: str = "") -> bool:
    """A reload has begun; send `ready()` again when it is done. MONOTONIC_USEC is what
    `Type=notify-reload` (systemd 253+) requires; older versions ignore it."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = ["RELOADING=1", f"MONOTONIC_USEC={usec}"]
    if status_text:
        lines.append(f"STATUS={_one_line(status_text)}")
    return notify(*lines)


def desktop(summary: str, body: str) -> bool:
    """A desktop notification through `notify-send` (libnotify), where it exists on PATH.
    Best effort: never waits for it (a missing session bus can make it hang; it is killed after
    DESKTOP_TIMEOUT s by a reaper thread), never raises; False if it could not be started."""
    tool = shutil.which("notify-send")
    if tool is None:
        return False
    try:
        proc = subprocess.Popen(
            [tool, "--app-name=snfs", "--urgency=critical", "--", summary, _one_line(body)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as e:
        log.debug("notify-send: cannot start: %s", e)
        return False
    threading.Thread(target=_reap, args=(proc,), daemon=True).start()
    return True


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=DESKTOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
