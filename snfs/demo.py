"""`snfs demo [MOUNTPOINT]`: the emulator with demo data, mounted, to try snfs in one command."""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The emulator runs as its own process (the filesystem never imports it).
STARTUP_SECONDS = 30.0


def start_emulator(data_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snfs",
            "emulator",
            "--demo",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_SECONDS
    buf = b""
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            buf += os.read(proc.stdout.fileno(), 4096)
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("listening on "):
                    return proc, line.split(" ", 2)[2].strip()
    proc.kill()
    raise SystemExit("snfs demo: the emulator did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


TRY = """
snfs demo: {url} (the emulator, demo data) is mounted on {mp}
Try, in another terminal:
  ls {mp}                                  # tables with attachments
  ls -l {mp}/incident/*/                   # records and their attachments
  cat {mp}/incident/*/readme.txt
  getfattr -d {mp}/incident/*/*            # user.mime_type, user.servicenow.*
  cp /etc/hostname {mp}/incident/<sys_id>/ # upload an attachment
  cat {mp}/.snfs/status                    # what the mount is doing
Users: admin:admin, itil:itil, hr:hr. Ctrl-C unmounts and stops the emulator.
"""


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="snfs demo")
    p.add_argument("mountpoint", nargs="?", type=Path, default=Path("snfs-demo"))
    p.add_argument("--data", type=Path, help="keep the emulator's data here (default: temporary)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    a = p.parse_args(argv)
    mp = a.mountpoint.absolute()
    mp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="snfs-demo-") as tmp:
        data = a.data or Path(tmp) / "data"
        emulator, url = start_emulator(data)
        try:
            print(TRY.format(url=url, mp=mp), flush=True)
            env = dict(os.environ, SNFS_PASSWORD="admin")
            mount = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "snfs",
                    "mount",
                    url,
                    str(mp),
                    "--user",
                    "admin",
                    "--spool-dir",
                    str(Path(tmp) / "spool"),
                    "--cache-dir",
                    str(Path(tmp) / "cache"),
                    *(["-" + "v" * a.verbose] if a.verbose else []),
                ],
                env=env,
            )
            try:
                return mount.wait()
            except KeyboardInterrupt:
                mount.send_signal(signal.SIGINT)
                return mount.wait() or 0
        finally:
            stop(emulator)
