"""300 MB up and down through the client in a child process whose peak RSS stays < 100 MB."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.client_support import new_record, read_file_sha

SIZE = 300 * 1024 * 1024
LIMIT_MB = 100

CHILD = r"""
import hashlib, json, sys, time

def peak_rss_kib():
    # VmHWM: this process' own peak (ru_maxrss keeps the forking parent's across exec)
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmHWM:'))
import trio
from pathlib import Path
from snfs.auth import BasicAuth
from snfs.backends.servicenow.client import AttachmentClient, ClientConfig

url, rec, src, dst = sys.argv[1:5]

async def main():
    cfg = ClientConfig(base_url=url, auth=BasicAuth("admin", "admin"), timeout=120)
    async with AttachmentClient(cfg) as c:
        t0 = time.monotonic()
        att = await c.upload("incident", rec, "big.bin", Path(src))
        t1 = time.monotonic()
        h = hashlib.sha256()
        n = 0
        async with await trio.open_file(dst, "wb") as out:
            async for chunk in c.stream(att.sys_id):
                h.update(chunk)
                n += len(chunk)
                await out.write(chunk)
        t2 = time.monotonic()
    rss_mb = peak_rss_kib() / 1024
    print(json.dumps({"hash": att.hash, "size": att.size_bytes, "down_hash": h.hexdigest(),
                      "down_size": n, "rss_mb": rss_mb, "up_s": t1 - t0, "down_s": t2 - t1}))

trio.run(main)
"""


def _generate(path: Path) -> str:
    """Deterministic content written 1 MiB at a time (never all in memory)."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(SIZE // (1 << 20)):
            block = random.Random(i).randbytes(1 << 20)
            h.update(block)
            f.write(block)
    return h.hexdigest()


@pytest.mark.timeout(120)
def test_300mb_up_and_down_in_bounded_memory(emulator_factory, tmp_path: Path) -> None:
    emu = emulator_factory("--state-delay", "0")
    rec = new_record(emu)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    digest = _generate(src)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, emu.url, rec, str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"\nmemory test: peak RSS {result['rss_mb']:.1f} MB, upload {result['up_s']:.1f} s, "
        f"download {result['down_s']:.1f} s"
    )
    assert result["size"] == result["down_size"] == SIZE
    assert result["hash"] == result["down_hash"] == digest == read_file_sha(dst)
    assert result["rss_mb"] < LIMIT_MB
