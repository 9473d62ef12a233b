"""Start `snfs emulator` as a child process on a free loopback port, and stop it by pid.

The one "start the emulator" routine: `snfs demo`, the tests (`tests/support/emulator_proc.py`) and
the benchmarks (`bench/systems.py`) all use it. The emulator announces its address with one
line on stdout (`announce`), which `launch` waits for. This module imports nothing of the
emulator's stack, so it works where only the mount is installed (the child then says which
extra is missing).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from snfs.children import snfs_command

READY = "listening on "


def announce(address: str) -> None:
    """What the emulator prints once it accepts connections (read by `launch`)."""
    print(f"{READY}{address}", flush=True)


@dataclass
class Launched:
    url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    args: list[str] = field(default_factory=list)

    def stop(self, grace: float = 5.0) -> None:
        stop_process(self.proc, grace)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only this process, by its pid."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def launch(
    data_dir: Path,
    *args: str,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    log: Path | None = None,
) -> Launched:
    """Run `snfs emulator --host HOST --port 0 --data DIR ARGS...`; return once it has
    announced its address. Its stderr goes to `log` (else it is inherited)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = snfs_command("emulator", "--host", host, "--port", "0")
    cmd += ["--data", str(data_dir), *args]
    err: IO[bytes] | None = open(log, "ab") if log else None  # noqa: SIM115 - the child keeps it
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    finally:
        if err is not None:
            err.close()
    try:
        return Launched(_wait_for_address(proc, timeout), proc, data_dir, list(args))
    except BaseException:
        stop_process(proc)
        raise


def _wait_for_address(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the emulator exited with {proc.returncode}: {proc.args!r}")
        if not select.select([proc.stdout], [], [], 0.2)[0]:
            continue
        buf += os.read(proc.stdout.fileno(), 4096)
        for line in buf.decode(errors="replace").splitlines():
            if line.startswith(READY):
                return line[len(READY) :].strip()
    raise RuntimeError(f"the emulator did not announce its address within {timeout:g} s")
