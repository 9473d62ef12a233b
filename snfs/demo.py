"""`snfs demo [MOUNTPOINT]`: the emulator with demo data, mounted, to try snfs in one command."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
from pathlib import Path

# The emulator runs as its own process (the filesystem never imports it).
from snfs.children import snfs_command
from snfs.emulator.launch import launch

STARTUP_SECONDS = 30.0


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
        try:
            emulator = launch(data, "--demo", timeout=STARTUP_SECONDS)
        except RuntimeError as e:
            raise SystemExit(f"snfs demo: {e}") from None
        url = emulator.url
        try:
            print(TRY.format(url=url, mp=mp), flush=True)
            env = dict(os.environ, SNFS_PASSWORD="admin")
            mount = subprocess.Popen(
                snfs_command(
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
                ),
                env=env,
            )
            try:
                return mount.wait()
            except KeyboardInterrupt:
                mount.send_signal(signal.SIGINT)
                return mount.wait() or 0
        finally:
            emulator.stop(grace=10)
