"""The large-table case: `/incident` with 250,000 attachments behind a WAN-like delay.

`python -m bench.large [--latency MS] [--attachments N] [--records N]` (also run by
`python -m bench --cases large-table`). It writes the emulator's SQLite database directly
(one bulk insert, no content: the case never reads a file), starts the emulator on it with
`--latency MS` (every API request takes that long, inside its server session), and measures
on a fresh snfs mount:

- the page round trip: one plain request for 1,000 full attachment rows through the same delay
  (the unit the targets are counted in);
- `ls -f /incident` as a file manager reads it (getdents in a loop): time to the first entry
  and to the whole listing; every record listed exactly once, compared with the database;
- `stat /incident/<a record no page has reached yet>` issued right after the first entry;
- the daemon's RSS after the listing;
- the same listing again after the directory cache expired: time to the first entry;
- a scoped mount (`--scope incident=active=true`): its listing compared with the database;
- `find /incident -type f` on a fresh mount (empty metadata index), then again after a
  remount that keeps its cache directory (the index): time, requests, files found, RSS;
  these mounts use snfs's default --dir-cache-time (`--find-dir-cache-time`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import util
from bench.data import AUTH, MiB
from snfs.emulator.db import ATTACHMENT_FIELDS, Store
from snfs.emulator.tables import TABLES

TABLE = "incident"
TARGETS = {
    "first": 5,
    "whole": 100,
    "lookup": 5,
    "rss": 150 * MiB,
    "revisit": 5,
    "find": 150,
    "find_requests": 400,
}


def _sys_id(kind: str, i: int) -> str:
    return hashlib.md5(f"{kind}{i}".encode()).hexdigest()


def generate(
    data_dir: Path,
    *,
    records: int,
    attachments: int,
    empty_records: int = 0,
    active_every: int = 3,
    heavy: int = 0,
    seed: int = 1,
) -> dict[str, Any]:
    """Write `records` incidents with `attachments` spread over them (every record gets at
    least one when attachments >= records), plus `empty_records` without any, straight into
    the emulator's database; the first record gets `heavy` more (a record longer than a
    page). Every `active_every`-th record is active=true. Returns what a
    listing must show: {"with": sorted sys_ids with attachments, "active": those active}."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / "emulator.sqlite3")
    conn = store.conn
    rnd = random.Random(seed)
    spec = TABLES[TABLE]
    base = {f: "" for f in spec.fields}
    start = 1_735_689_600  # 2025-01-01
    rec_rows = []
    ids = []
    active: list[str] = []
    for i in range(records + empty_records):
        sid = _sys_id("rec", i)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + i * 60))
        is_active = i % active_every == 0
        data = dict(
            base,
            sys_id=sid,
            number=f"INC{1_000_000 + i:07d}",
            active="true" if is_active else "false",
            sys_created_on=stamp,
            sys_updated_on=stamp,
            sys_created_by="admin",
            sys_updated_by="admin",
            sys_mod_count="0",
            sys_class_name=TABLE,
        )
        rec_rows.append((TABLE, sid, stamp, json.dumps(data)))
        if i < records:
            ids.append(sid)
            if is_active:
                active.append(sid)
    cols = list(ATTACHMENT_FIELDS)
    att_rows = []
    for j in range(attachments + heavy):
        if j >= attachments:
            rec = ids[0]
        else:
            rec = ids[j % records] if j < records else ids[rnd.randrange(records)]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + rnd.randrange(3 * 10**7)))
        row = {
            "size_bytes": str(100 + j % 5000),
            "file_name": f"file{j % 7}.txt",
            "sys_mod_count": "0",
            "sys_updated_on": stamp,
            "table_name": TABLE,
            "sys_id": _sys_id("att", j),
            "sys_updated_by": "admin",
            "content_type": "text/plain",
            "sys_created_on": stamp,
            "size_compressed": "100",
            "compressed": "true",
            "state": "available",
            "table_sys_id": rec,
            "chunk_size_bytes": "700000",
            "hash": hashlib.sha256(str(j).encode()).hexdigest(),
            "sys_created_by": "admin",
        }
        att_rows.append([row.get(c, "") for c in cols])
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rec_rows)
    conn.executemany(
        f"INSERT INTO sys_attachment ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        att_rows,
    )
    conn.execute("INSERT OR REPLACE INTO counters VALUES (?, ?)", (TABLE, 1_000_000 + records + 10))
    conn.execute("COMMIT")
    store.close()
    with_atts = sorted(ids[: min(records, attachments)])
    return {"with": with_atts, "active": sorted(set(active) & set(with_atts))}


def with_attachments(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT DISTINCT table_sys_id FROM sys_attachment WHERE table_name = ?", (TABLE,)
        ).fetchall()
    finally:
        conn.close()
    return sorted(r[0] for r in rows)


def page_round_trip(url: str, n: int = 5) -> float:
    """Median seconds of one plain request for 1,000 full attachment rows (the unit)."""
    times = []
    with httpx.Client(auth=AUTH, timeout=60) as c:
        for i in range(n):
            t0 = time.perf_counter()
            r = c.get(
                f"{url}/api/now/attachment",
                params={
                    "sysparm_query": f"table_name={TABLE}",
                    "sysparm_limit": "1000",
                    "sysparm_offset": str(i * 1000),
                },
            )
            r.raise_for_status()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_listing(path: Path, on_first: Any = None) -> tuple[float, float, list[str]]:
    """getdents in a loop, as `ls -f` or a file manager: (first entry s, whole s, names)."""
    names: list[str] = []
    first = None
    t0 = time.perf_counter()
    with os.scandir(path) as it:
        for entry in it:
            if first is None:
                first = time.perf_counter() - t0
                if on_first:
                    on_first()
            names.append(entry.name)
    return first or 0.0, time.perf_counter() - t0, names


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from bench.systems import SnfsMount
    from snfs.emulator.launch import launch

    data = work / "emulator-data"
    t0 = time.perf_counter()
    expected = generate(
        data, records=a.records, attachments=a.attachments, empty_records=a.records // 8
    )
    gen_s = time.perf_counter() - t0
    util.log(f"large-table: {a.attachments} attachments over {a.records} records in {gen_s:.1f} s")
    # --latency: every API request takes that long on the server, inside its session (as a
    # WAN instance's round trip looks to the client).
    latency = ["--latency", f"{a.latency:g}"] if a.latency else []
    emu = launch(data, "--state-delay", "0", *latency, log=work / "emulator.log", timeout=120)
    out: dict[str, Any] = {
        "attachments": a.attachments,
        "records": a.records,
        "latency_ms": a.latency,
        "snfs_opt": a.snfs_opt,
        "generate_s": round(gen_s, 1),
    }
    try:
        unit = page_round_trip(emu.url)
        out["page_round_trip_s"] = round(unit, 3)
        opts = ["--dir-cache-time", str(a.dir_cache_time), *a.snfs_opt]
        m = SnfsMount(emu.url, work, opts)
        mp = m.mount()
        try:
            cpu0 = util.cpu_seconds(m.pid), util.cpu_seconds(emu.proc.pid)
            out.update(_listing(m, mp, expected, unit, a))
            cpu1 = util.cpu_seconds(m.pid), util.cpu_seconds(emu.proc.pid)
            out["daemon_cpu_s"] = round((cpu1[0] or 0) - (cpu0[0] or 0), 1)
            out["emulator_cpu_s"] = round((cpu1[1] or 0) - (cpu0[1] or 0), 1)
        finally:
            m.unmount()
        # The walks run with snfs's default --dir-cache-time (60 s): the 20 s above only keeps
        # the revisit short. A walk longer than it pays one kernel lookup per record
        # directory it reaches after that (docs/PERFORMANCE.md, "Walking a large table").
        find_opts = ["--dir-cache-time", f"{a.find_dir_cache_time:g}", *a.snfs_opt]
        out["find_dir_cache_time"] = a.find_dir_cache_time
        out.update(_find_twice(emu.url, work, find_opts, unit, a.attachments))
        ms = SnfsMount(emu.url, work, [*opts, "--scope", f"{TABLE}=active=true"])
        mp = ms.mount()
        try:
            t1 = time.perf_counter()
            _, _, names = read_listing(mp / TABLE)
            out["scoped_s"] = round(time.perf_counter() - t1, 2)
            out["scoped_round_trips"] = round(out["scoped_s"] / unit, 1)
            out["scoped_exact"] = sorted(names) == expected["active"]
            out["scoped_records"] = len(names)
        finally:
            ms.unmount()
        # The machine may be busier or idler by now: the unit again, for the record.
        out["page_round_trip_end_s"] = round(page_round_trip(emu.url), 3)
    finally:
        emu.stop()
    return out


def _listing(
    m: Any, mp: Path, expected: dict[str, Any], unit: float, a: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # A record the listing reaches last (pagers go up in sys_id order from several cuts; the
    # highest id is at the very end of the last one), looked up right after the first entry.
    target = expected["with"][-1]
    lookup: dict[str, float] = {}

    def stat_target() -> None:
        t = time.perf_counter()
        os.stat(mp / TABLE / target)
        lookup["s"] = time.perf_counter() - t

    thread: list[threading.Thread] = []

    def on_first() -> None:
        th = threading.Thread(target=stat_target)
        th.start()
        thread.append(th)

    first, whole, names = read_listing(mp / TABLE, on_first)
    for th in thread:
        th.join()
    out["first_entry_s"] = round(first, 3)
    out["whole_s"] = round(whole, 2)
    out["lookup_during_s"] = round(lookup.get("s", -1), 3)
    out["entries"] = len(names)
    out["exactly_once"] = len(names) == len(set(names)) and sorted(names) == expected["with"]
    out["rss_after"] = rss(m.pid)
    out["peak_rss"] = util.peak_rss(m.pid)
    # Revisit after the directory cache expired: served at once, refreshed in the background.
    time.sleep(a.dir_cache_time + 0.5)
    first2, whole2, names2 = read_listing(mp / TABLE)
    out["revisit_first_s"] = round(first2, 3)
    out["revisit_whole_s"] = round(whole2, 3)
    out["revisit_entries"] = len(names2)
    out["rounds"] = {
        "first": round(first / unit, 2),
        "whole": round(whole / unit, 1),
        "lookup": round(lookup.get("s", -1) / unit, 2),
        "revisit": round(first2 / unit, 2),
    }
    return out


def requests_made(url: str) -> int:
    """API requests the emulator answered since its last reset (its own counters)."""
    with httpx.Client(auth=AUTH, timeout=60) as c:
        stats = c.get(f"{url}/__emulator__/stats").raise_for_status().json()
    return int(sum(stats["by_route"].values()))


def reset_requests(url: str) -> None:
    with httpx.Client(auth=AUTH, timeout=60) as c:
        c.post(f"{url}/__emulator__/reset", json={}).raise_for_status()


def _find(m: Any, mp: Path, url: str, unit: float) -> dict[str, Any]:
    """`find /<table> -type f` as a user runs it: seconds, files, requests, RSS (the peak is
    sampled while it runs)."""
    reset_requests(url)
    peak = {"rss": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak["rss"] = max(peak["rss"], rss(m.pid))

    th = threading.Thread(target=sample)
    th.start()
    cpu0, kids0 = util.cpu_seconds(m.pid) or 0.0, _children_cpu()
    t0 = time.perf_counter()
    try:
        found = subprocess.run(
            ["find", str(mp / TABLE), "-type", "f"], capture_output=True, check=True
        ).stdout.count(b"\n")
    finally:
        stop.set()
        th.join()
    seconds = time.perf_counter() - t0
    return {
        "s": round(seconds, 2),
        "pages": round(seconds / unit, 1),
        "files": found,
        "requests": requests_made(url),
        "rss_peak": max(peak["rss"], rss(m.pid)),
        "rss_after": rss(m.pid),
        # CPU seconds, which the machine's load changes less than wall time: the daemon's
        # (all threads) and find's own (user + system: the kernel's FUSE work on its side).
        "daemon_cpu_s": round((util.cpu_seconds(m.pid) or 0.0) - cpu0, 1),
        "find_cpu_s": round(_children_cpu() - kids0, 1),
    }


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _find_twice(
    url: str, work: Path, opts: list[str], unit: float, attachments: int
) -> dict[str, Any]:
    from bench.systems import SnfsMount

    m = SnfsMount(url, work, opts)
    mp = m.mount()
    out: dict[str, Any] = {}
    try:
        out["find"] = _find(m, mp, url, unit)
        m.unmount(keep=True)
        t0 = time.perf_counter()
        mp = m.mount(again=True)
        out["remount_s"] = round(time.perf_counter() - t0, 2)
        out["find_remount"] = _find(m, mp, url, unit)
    finally:
        m.unmount()
    out["find_expected"] = attachments
    return out


def verdicts(r: dict[str, Any]) -> list[tuple[str, bool, str]]:
    rounds = r["rounds"]
    return [
        ("first entry ≤ 5 round trips", rounds["first"] <= 5, f"{rounds['first']}"),
        ("whole listing ≤ 100 round trips", rounds["whole"] <= 100, f"{rounds['whole']}"),
        ("lookup during listing ≤ 5", rounds["lookup"] <= 5, f"{rounds['lookup']}"),
        ("RSS after listing ≤ 150 MiB", r["rss_after"] <= TARGETS["rss"], _mib(r["rss_after"])),
        ("revisit after expiry: first ≤ 5", rounds["revisit"] <= 5, f"{rounds['revisit']}"),
        ("every record exactly once", r["exactly_once"], f"{r['entries']} entries"),
        ("scoped listing = API", r["scoped_exact"], f"{r['scoped_records']} records"),
        *_find_verdicts(r, "find", "find"),
        *_find_verdicts(r, "find_remount", "find after a remount"),
    ]


def _find_verdicts(r: dict[str, Any], key: str, what: str) -> list[tuple[str, bool, str]]:
    f = r.get(key)
    if not f:
        return []
    return [
        (f"{what}: every file", f["files"] == r["find_expected"], f"{f['files']:,} files"),
        (f"{what} ≤ {TARGETS['find']} PAGE", f["pages"] <= TARGETS["find"], f"{f['pages']}"),
        (
            f"{what} ≤ {TARGETS['find_requests']} requests",
            f["requests"] <= TARGETS["find_requests"],
            f"{f['requests']}",
        ),
        (f"{what}: RSS ≤ 150 MiB", f["rss_peak"] <= TARGETS["rss"], _mib(f["rss_peak"])),
    ]


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB"


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Large table: {r['attachments']:,} attachments over {r['records']:,} `{TABLE}` records "
        f"(plus {r['records'] // 8:,} without attachments), {r['latency_ms']} ms per request"
        f"{', snfs ' + ' '.join(r['snfs_opt']) if r.get('snfs_opt') else ''}. "
        f"One page round trip (1,000 full rows through the same delay): "
        f"{r['page_round_trip_s'] * 1000:.0f} ms at the start, "
        f"{r.get('page_round_trip_end_s', 0) * 1000:.0f} ms at the end. `find` runs with "
        f"--dir-cache-time {r.get('find_dir_cache_time', 20):g}.",
        "",
        "| measure | value | page round trips | target |",
        "| --- | --- | --- | --- |",
        f"| `ls -f /incident`: first entry | {r['first_entry_s']} s | {r['rounds']['first']} "
        "| ≤ 5 |",
        f"| whole listing ({r['entries']:,} entries) | {r['whole_s']} s | {r['rounds']['whole']} "
        "| ≤ 100 |",
        f"| `stat` of an unlisted record during it | {r['lookup_during_s']} s | "
        f"{r['rounds']['lookup']} | ≤ 5 |",
        f"| daemon RSS after the listing (peak) | {_mib(r['rss_after'])} ({_mib(r['peak_rss'])}) "
        "| | ≤ 150 MiB |",
        f"| revisit after expiry: first entry | {r['revisit_first_s']} s | "
        f"{r['rounds']['revisit']} | ≤ 5 |",
        f"| scoped `/incident` (active=true): whole | {r['scoped_s']} s | "
        f"{r['scoped_round_trips']} | |",
        *_find_rows(r),
        "",
        f"CPU over the listing and the revisit: daemon {r.get('daemon_cpu_s')} s, "
        f"emulator {r.get('emulator_cpu_s')} s.",
        "",
    ]
    for text, ok, value in verdicts(r):
        lines.append(f"- {'✅' if ok else '❌'} {text}: {value}")
    return "\n".join(lines) + "\n"


def _find_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    for key, what in (("find", "fresh mount"), ("find_remount", "after a remount")):
        f = r.get(key)
        if f:
            rows.append(
                f"| `find /incident -type f`, {what} ({f['files']:,} files, {f['requests']} "
                f"requests, RSS peak {_mib(f['rss_peak'])}; CPU: daemon "
                f"{f.get('daemon_cpu_s')} s, find {f.get('find_cpu_s')} s) | {f['s']} s | "
                f"{f['pages']} "
                f"| ≤ {TARGETS['find']}, ≤ {TARGETS['find_requests']} requests |"
            )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.large", description=__doc__)
    p.add_argument("--latency", type=float, default=100.0, metavar="MS")
    p.add_argument("--attachments", type=int, default=250_000)
    p.add_argument("--records", type=int, default=80_000)
    p.add_argument("--dir-cache-time", type=float, default=20.0)
    p.add_argument(
        "--find-dir-cache-time",
        type=float,
        default=60.0,
        help="--dir-cache-time of the mounts `find` walks (snfs's default: 60)",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--workdir", type=Path)
    p.add_argument(
        "--snfs-opt",
        action="append",
        default=[],
        metavar="OPT",
        help="an extra `snfs mount` option (e.g. --snfs-opt=--no-index); repeatable",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import shutil
    import tempfile

    a = parse_args(argv)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="snfs-large-", dir="/var/tmp"))
    try:
        r = measure(a, work)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "large.json").write_text(json.dumps(r, indent=1, ensure_ascii=False) + "\n")
    md = markdown(r)
    (a.out / "large.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
