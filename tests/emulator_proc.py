"""Start `snfs emulator` as a subprocess on a free loopback port, for tests and benchmarks.

The process is always stopped by pid, even when the test fails or times out.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ADMIN = ("admin", "admin")


@dataclass
class EmulatorProc:
    url: str
    proc: subprocess.Popen
    data_dir: Path
    args: list[str] = field(default_factory=list)

    # Small synchronous helpers so tests can check the instance's view without the mount.
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        auth: tuple[str, str] = ADMIN,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        data = None
        hdrs = {"Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        if auth:
            hdrs["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, _, raw = self.request(method, path, body, **kw)
        assert 200 <= status < 300, (status, raw[:500])
        return json.loads(raw) if raw else None

    def stats(self) -> dict:
        return self.json("GET", "/__emulator__/stats")

    def reset_stats(self) -> None:
        self.json("POST", "/__emulator__/reset", {})

    def fault(self, **spec: Any) -> None:
        self.json("POST", "/__emulator__/faults", spec)

    def attachments(self, query: str = "") -> list[dict]:
        from urllib.parse import quote

        return self.json(
            "GET", f"/api/now/attachment?sysparm_limit=100000&sysparm_query={quote(query)}"
        )["result"]

    def stop(self) -> None:
        stop_pid(self.proc)


def stop_pid(proc: subprocess.Popen, grace: float = 5.0) -> None:
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


def start_emulator(
    data_dir: Path, *args: str, timeout: float = 30.0, log: Path | None = None
) -> EmulatorProc:
    """Run `snfs emulator --port 0 --data DIR ARGS...`; return once it prints its address."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "snfs",
        "emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data",
        str(data_dir),
        *args,
    ]
    err = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
    deadline = time.monotonic() + timeout
    buf = b""
    assert proc.stdout is not None
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"emulator exited with {proc.returncode}: {cmd}")
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("listening on "):
                    return EmulatorProc(line.split(" ", 2)[2].strip(), proc, data_dir, list(args))
        raise RuntimeError("emulator did not print its address in time")
    except BaseException:
        stop_pid(proc)
        raise
