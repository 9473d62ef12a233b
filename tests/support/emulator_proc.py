"""The emulator as the tests see it: `snfs.emulator.launch` plus small synchronous helpers to
check the instance's view without the mount.

The process is always stopped by pid, even when the test fails or times out.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from snfs.emulator.launch import Launched, launch, stop_process

ADMIN = ("admin", "admin")


@dataclass
class EmulatorProc(Launched):
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
        return self.json(
            "GET", f"/api/now/attachment?sysparm_limit=100000&sysparm_query={quote(query)}"
        )["result"]


stop_pid = stop_process  # its name here before it moved to the product


def start_emulator(
    data_dir: Path, *args: str, timeout: float = 30.0, log: Path | None = None
) -> EmulatorProc:
    """Run `snfs emulator --port 0 --data DIR ARGS...`; return once it prints its address."""
    e = launch(data_dir, *args, timeout=timeout, log=log)
    return EmulatorProc(e.url, e.proc, e.data_dir, e.args)


def self_signed_cert(where: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, in `where` (an emulator's
    --certfile and --keyfile: TLS that no default trust store accepts)."""
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key
