"""`snfs sync MOUNTPOINT`: wait until the mount owes the instance nothing (write-back).

Reads the mount's `/.snfs/sync` (snfs.control), which sends now whatever is owed and answers
once nothing is in flight. Exit 0 when nothing is owed or blocked; 1 with one line per file
still owed or blocked, and why; 2 when the path is not a live snfs mount.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def read_sync(mountpoint: Path) -> dict:
    fd = os.open(mountpoint / ".snfs" / "sync", os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return json.loads(b"".join(chunks))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="snfs sync",
        description="Wait until every closed file is stored on the instance (--write-back).",
    )
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    a = p.parse_args(argv)
    try:
        answer = read_sync(a.mountpoint)
    except (OSError, ValueError) as e:
        print(
            f"snfs sync: {a.mountpoint}: not an snfs mount or not answering ({e})", file=sys.stderr
        )
        return 2
    if a.json:
        print(json.dumps(answer, indent=2))
    left = answer.get("pending_uploads", [])
    for f in answer.get("local_only", []):  # shown, never waited for: not a failure
        print(f"snfs sync: {f['path']}: local-only: {f['last_error']}", file=sys.stderr)
    for f in left:
        print(
            f"snfs sync: {f['path']}: {f['state']}: {f['last_error'] or 'not stored yet'}",
            file=sys.stderr,
        )
    return 0 if answer.get("synced") and not left else 1
