"""A short run of the outside-in soak (tests/soak/mount_soak.py, `make soak`), one mode each,
so the driver does not rot: it must mount, run every kind of call, queue faults, kill and
restart the daemon, quiesce, and judge the instance through its API. In write-back mode an
attachment no worker made is planted after the quiesce: the check must report it.

Any finding fails the test, with its seed and the names' last operations (replay it with
`python tests/soak/mount_soak.py --seed N --modes MODE --keep`; the seed does not fix thread
timing, so a rare finding is reproduced statistically). SNFS_SOAK_STRICT=0 turns findings into
warnings, for a branch that knowingly still has one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tests.support.mount_proc import require_fuse

DRIVER = Path(__file__).parent / "soak" / "mount_soak.py"
OPS = {"write", "cp", "append", "fsync", "rename", "rm", "read"}


def run_soak(tmp_path: Path, mode: str, *extra: str) -> tuple[int, dict, str]:
    seed = int(time.time()) % 100000
    out = tmp_path / "soak.json"
    r = subprocess.run(
        [sys.executable, str(DRIVER), "--seed", str(seed), "--minutes", "0.4", "--modes", mode]
        + ["--kills", "1", "--restarts", "1", "--fault-every", "1", "--min-calls", "250"]
        + ["--min-faults", "5"]
        + ["--json", str(out)]
        + ["--workdir", str(tmp_path / "work"), *extra],
        capture_output=True,
        text=True,
        timeout=400,
    )
    text = r.stdout + r.stderr
    assert f"seed {seed}" in text.splitlines()[0], text  # the seed first, to replay it
    assert r.returncode in (0, 1), text  # 2: the soak itself could not run
    summary = json.loads(out.read_text())["modes"][0]
    assert summary["mode"] == mode
    assert summary["ops"] > 200 and set(summary["by_op"]) >= OPS, text
    assert summary["faults"] >= 5 and summary["kills"] == 1 and summary["restarts"] == 1, text
    return r.returncode, summary, text


def judge(summary: dict, text: str, planted: str | None = None) -> None:
    found = [
        v
        for v in summary["violations"]
        if not (planted and v["kind"] in ("duplicate", "torn") and v["where"].endswith(planted))
    ]
    if not found:
        return
    lines = "\n".join(f"[{v['kind']}] {v['where']}: {v['detail']}" for v in found)
    message = f"the soak ({summary['mode']}, seed {summary['seed']}) found:\n{lines}"
    if os.environ.get("SNFS_SOAK_STRICT", "1") != "0":
        pytest.fail(message + "\n" + text)
    warnings.warn(message, stacklevel=2)


@pytest.mark.fuse
@pytest.mark.timeout(420)
def test_soak_default_mode(tmp_path: Path) -> None:
    require_fuse()
    rc, summary, text = run_soak(tmp_path, "default")
    assert rc == (1 if summary["violations"] else 0), text
    judge(summary, text)


@pytest.mark.fuse
@pytest.mark.timeout(420)
def test_soak_write_back_reports_a_planted_duplicate(tmp_path: Path) -> None:
    require_fuse()
    rc, summary, text = run_soak(tmp_path, "write-back", "--plant")
    assert rc == 1, text
    planted = [n for n in summary["notes"] if n.startswith("planted a second ")]
    assert len(planted) == 1, text
    record, name = planted[0].split()[5], planted[0].split()[3]
    assert any(
        v["where"] == f"incident/{record}/{name}" and v["kind"] in ("duplicate", "torn")
        for v in summary["violations"]  # torn: the name was absent, the bytes are no version
    ), text
    judge(summary, text, planted=f"{record}/{name}")
