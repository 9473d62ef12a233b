"""Smoke test of the benchmark (`python -m bench`): a quick run of two cheap cases with snfs and
curl only (no rclone), checking the shape of what it writes. The real benchmark is `make bench`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.mount_proc import require_fuse

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_bench_quick_smoke(tmp_path: Path) -> None:
    require_fuse()
    if not shutil.which("curl"):
        pytest.skip("curl is missing (the bench installs it with apt-get; the tests do not)")
    out = tmp_path / "results"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--repeat",
            "1",
            "--cases",
            "cold-read,ls-l",
            "--systems",
            "snfs,curl",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert p.returncode == 0, p.stderr[-3000:]

    md = (out / "latest.md").read_text()
    assert "| case | unit | snfs | curl (limit) | rclone mount | snfs/curl | snfs/rclone" in md
    rows = {
        line.split("|")[1].strip(): line
        for line in md.splitlines()
        if line.startswith("| ") and not line.startswith(("| case", "| ---"))
    }
    assert set(rows) == {"cold-read", "ls-l"}, md
    assert md in p.stdout  # the table is printed too

    data = json.loads((out / "latest.json").read_text())
    assert data["meta"]["quick"] is True and data["meta"]["repeat"] == 1
    assert data["meta"]["systems"] == ["snfs", "curl"]
    assert set(data["cases"]) == {"cold-read", "ls-l"}
    for name, case in data["cases"].items():
        assert {r["system"] for r in case["runs"]} == {"snfs", "curl"}, name
        for r in case["runs"]:
            assert "error" not in r, (name, r, p.stderr[-3000:])
            assert r["seconds"] > 0
        snfs = case["summary"]["snfs"]
        assert snfs["n"] == 1 and snfs["median"] > 0
        assert snfs["requests_max"] >= 1 and snfs["peak_rss_max"] > 0
        assert case["ratios"]["snfs/curl"] > 0 and case["ratios"]["snfs/rclone"] is None
        assert case["targets"], name
    assert data["cases"]["cold-read"]["runs"][0]["bytes"] == data["meta"]["sizes"]["big"]
    ls = data["cases"]["ls-l"]["targets"][0]
    assert ls["target"].startswith("1 list request") and isinstance(ls["met"], bool)
    assert not (tmp_path / "work").exists()  # the scratch directory is cleaned up
