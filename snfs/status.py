"""`snfs status [MOUNTPOINT]`: what a mount is doing, read from its `/.snfs/status`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

_OCTAL = re.compile(rb"\\([0-7]{3})")


def unescape_mount_field(raw: bytes) -> str:
    """A path field of /proc/self/mounts or mountinfo: the kernel writes space, tab, newline
    and backslash as octal escapes (`\\040`) and every other byte as is (UTF-8 stays UTF-8)."""
    return os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m[1], 8)]), raw))


def snfs_mounts() -> list[Path]:
    out = []
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == b"fuse.snfs":
                out.append(Path(unescape_mount_field(fields[1])))
    return out


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def progress_text(t: dict[str, Any]) -> str:
    """`12.0 MiB of 64.0 MiB (18%)`, or `12.0 MiB` when the total is not known."""
    done, total = t.get("bytes_done", 0), t.get("bytes_total")
    if not total:
        return size_text(done)
    return f"{size_text(done)} of {size_text(total)} ({100 * done // total}%)"


def render(s: dict[str, Any]) -> str:
    lines = [
        f"{s['mountpoint']}: {s['instance']}  pid {s['pid']}  up {s['uptime_seconds']} s"
        + ("  (read-only)" if s.get("read_only") else "")
    ]
    req = s.get("requests", {})
    counts = req.get("requests", {})
    if counts:
        lines.append(
            "  requests: "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
            + f"; {req.get('retries', 0)} retries, {req.get('errors', 0)} errors"
        )
        lines.append(f"  bytes: in {req.get('bytes_in', 0)}, out {req.get('bytes_out', 0)}")
    cache = s.get("cache", {})
    hits, misses = cache.get("hits", 0), cache.get("misses", 0)
    rate = f"{100 * hits / (hits + misses):.0f}%" if hits + misses else "n/a"
    lines.append(
        f"  cache: hit rate {rate}, memory {cache.get('memory_bytes', 0)} B, "
        f"disk {cache.get('disk_bytes', 0)} B"
    )
    moving = s.get("transfers_in_flight", [])
    lines.append(f"  transfers in flight: {len(moving)}")
    for t in moving:
        lines.append(f"    {t['kind']:<8} {t['path']}  {progress_text(t)}")
    pending = s.get("pending_uploads", [])
    if s.get("write_back"):
        lines.append(f"  write-back: on, {s.get('transfers')} transfers (`snfs sync` waits)")
    blocked = sum(1 for p in pending if p["state"] == "blocked")
    lines.append(
        f"  pending uploads: {len(pending)}" + (f" ({blocked} blocked)" if blocked else "")
    )
    for p in pending:
        lines.append(
            f"    {p['path']}  {p['bytes']} B  age {p['age_seconds']} s  "
            f"{p['state']}  attempts {p['attempts']}  {p['last_error']}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="snfs status")
    p.add_argument("mountpoint", nargs="?", type=Path)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    points = [a.mountpoint] if a.mountpoint else snfs_mounts()
    if not points:
        print("snfs: no snfs mounts", file=sys.stderr)
        return 1
    code = 0
    for mp in points:
        try:
            data = json.loads((mp / ".snfs" / "status").read_text())
        except (OSError, ValueError) as e:
            print(f"snfs: {mp}: not an snfs mount or not answering ({e})", file=sys.stderr)
            code = 1
            continue
        print(json.dumps(data, indent=2) if a.json else render(data))
    return code
