"""snfs.notify against real AF_UNIX datagram sockets, as systemd listens on them."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from snfs import notify
from tests.support.waiting import eventually


def _receive(sock: socket.socket) -> str:
    sock.settimeout(5)
    return sock.recv(65536).decode()


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch):
    name = f"snfs-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_notify_sends_one_datagram(path_socket: socket.socket) -> None:
    assert notify.notify("A=1", "B=2") is True
    assert _receive(path_socket) == "A=1\nB=2"


def test_ready(path_socket: socket.socket) -> None:
    assert notify.ready("mounted https://x on /mnt/x") is True
    assert (
        _receive(path_socket)
        == f"READY=1\nSTATUS=mounted https://x on /mnt/x\nMAINPID={os.getpid()}"
    )


def test_ready_abstract_namespace(abstract_socket: socket.socket) -> None:
    assert notify.ready("up") is True
    assert _receive(abstract_socket) == f"READY=1\nSTATUS=up\nMAINPID={os.getpid()}"


def test_status_stopping_reloading(path_socket: socket.socket) -> None:
    assert notify.status("3 uploads pending")
    assert _receive(path_socket) == "STATUS=3 uploads pending"
    assert notify.stopping()
    assert _receive(path_socket) == "STOPPING=1"
    assert notify.stopping("unmounting")
    assert _receive(path_socket) == "STOPPING=1\nSTATUS=unmounting"
    assert notify.reloading()
    lines = _receive(path_socket).split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0


def test_status_cannot_inject_lines(path_socket: socket.socket) -> None:
    notify.status("file a\nREADY=1")
    assert _receive(path_socket) == "STATUS=file a READY=1"


def test_unset_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify("READY=1") is False
    assert notify.ready("x") is False
    assert notify.stopping() is False


def test_missing_socket_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert notify.ready("x") is False
    monkeypatch.setenv("NOTIFY_SOCKET", f"@snfs-test-absent-{uuid.uuid4().hex}")
    assert notify.status("x") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert notify.status("x") is False


def test_desktop_without_notify_send_is_a_noop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no notify-send here
    assert notify.desktop("snfs: upload refused", "x") is False


def test_desktop_runs_notify_send_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake notify-send on PATH records its arguments; a newline in the body (an instance's
    message) stays on one line."""
    out = tmp_path / "args"
    tool = tmp_path / "notify-send"
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {out}.tmp && mv {out}.tmp {out}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")  # the fake first
    assert notify.desktop("snfs: upload refused", "a/b/c.exe: bad\nextension") is True
    args = eventually(lambda: out.exists() and out.read_text().splitlines(), what="notify-send")
    assert args[-2:] == ["snfs: upload refused", "a/b/c.exe: bad extension"]
    assert "--app-name=snfs" in args


def test_sync_of_a_path_that_is_no_mount_exits_2(tmp_path: Path) -> None:
    from snfs import sync

    assert sync.main([str(tmp_path)]) == 2
