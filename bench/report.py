"""Summaries, targets and the Markdown/JSON outputs."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from bench.cases import CASES, PER_FILE_ROUTES
from bench.data import MiB

GB_S_IN_MIB_S = 2e9 / MiB  # "2 GB/s" = 2·10^9 bytes/s = 1907 MiB/s
RSS_LIMIT = 150 * MiB
GiB = 1024 * MiB
MOUNTS = ("snfs", "snfs-base", "rclone")  # the systems with a daemon whose CPU is measured


def metric(case_name: str, r: dict[str, Any]) -> float | None:
    if "error" in r:
        return None
    if CASES[case_name].unit == "MiB/s":
        return r.get("mib_s")
    return r.get("seconds")


def summarize(case_name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system in dict.fromkeys(r["system"] for r in runs):
        vals = [
            v for r in runs if r["system"] == system and (v := metric(case_name, r)) is not None
        ]
        errs = [r["error"] for r in runs if r["system"] == system and "error" in r]
        s: dict[str, Any] = {"n": len(vals)}
        if vals:
            s.update(median=statistics.median(vals), min=min(vals), max=max(vals))
        if errs:
            s["errors"] = errs
        mine = [r for r in runs if r["system"] == system and "error" not in r]
        reqs = [r["requests"] for r in mine if "requests" in r]
        if reqs and system in ("snfs", "curl"):
            s["requests_max"] = max(reqs)
            s["requests_median"] = statistics.median(reqs)
            routes: Counter = Counter()
            for r in mine:
                for k, v in r.get("by_route", {}).items():
                    routes[k] = max(routes[k], v)
            s["by_route_max"] = dict(routes)
        rss = [r["peak_rss"] for r in mine if "peak_rss" in r]
        if rss:
            s["peak_rss_max"] = max(rss)
        cpu = [
            r["daemon_cpu_s"] / r["seconds"]
            for r in mine
            if r.get("daemon_cpu_s") is not None and r.get("seconds")
        ]
        if cpu:
            s["daemon_cpu_per_wall"] = round(statistics.median(cpu), 2)
        per_gib = [
            r["daemon_cpu_s"] / (r["bytes"] / GiB)
            for r in mine
            if r.get("daemon_cpu_s") is not None and r.get("bytes")
        ]
        if per_gib and CASES[case_name].unit == "MiB/s":
            s["cpu_s_per_gib"] = round(statistics.median(per_gib), 2)
        emu = [
            r["emulator_cpu_s"] / r["seconds"]
            for r in mine
            if r.get("emulator_cpu_s") is not None and r.get("seconds")
        ]
        if emu and (system in ("snfs", "curl") or system.startswith("emu")):
            s["emulator_cpu_per_wall"] = round(statistics.median(emu), 2)
        out[system] = s
    return out


def speed_ratio(case_name: str, summ: dict[str, Any], a: str, b: str) -> float | None:
    """How many times faster `a` is than `b` (medians): > 1 means a is faster."""
    if a not in summ or b not in summ or "median" not in summ[a] or "median" not in summ[b]:
        return None
    x, y = summ[a]["median"], summ[b]["median"]
    if not x or not y:
        return None
    return x / y if CASES[case_name].unit == "MiB/s" else y / x


def targets(case_name: str, summ: dict[str, Any]) -> list[dict[str, Any]]:
    c = CASES[case_name]
    s = summ.get("snfs", {})
    out: list[dict[str, Any]] = []

    def x(v: float, threshold: float) -> str:
        return f"{v:.3f}×" if abs(v - threshold) < 0.01 else f"{v:.2f}×"

    def add(text: str, met: bool | None, value: str) -> None:
        out.append({"target": text, "met": met, "value": value})

    if "median" not in s:
        return out
    rc = speed_ratio(case_name, summ, "snfs", "curl")
    if case_name == "cold-read":  # issue 21's: within 2.5× of curl (identity), the wire
        add(
            "within 2.5× of curl",
            None if rc is None else rc >= 1 / 2.5,
            "n/a" if rc is None else x(rc, 1 / 2.5),
        )
    if case_name == "warm-read":
        req = s.get("requests_max")
        add("no request", None if req is None else req == 0, f"{req} requests")
        add("≥ 2 GB/s", s["median"] >= GB_S_IN_MIB_S, f"{s['median'] * MiB / 1e9:.2f} GB/s")
    if case_name == "ls-l":
        routes = s.get("by_route_max", {})
        lists = routes.get("GET /attachment", 0)
        per_file = sum(routes.get(k, 0) for k in PER_FILE_ROUTES)
        add(
            "1 list request, none per file",
            lists == 1 and per_file == 0,
            f"{lists} list, {per_file} per-file (of {s.get('requests_max')} in all)",
        )
    if case_name == "find-stat":
        req = s.get("requests_max")
        add("≤ 7 requests", None if req is None else req <= 7, f"{req} requests")
    if case_name == "rss-1g":
        rss = s.get("peak_rss_max")
        add(
            "peak RSS ≤ 150 MiB",
            None if rss is None else rss <= RSS_LIMIT,
            "n/a" if rss is None else f"{rss / MiB:.0f} MiB",
        )
    rr = speed_ratio(case_name, summ, "snfs", "rclone")
    if rr is not None:
        if c.kind in ("listing", "small"):
            add("ahead of rclone", rr > 1.0, x(rr, 1.0))
        elif case_name in ("cold-read", "parallel-read", "upload"):  # issue 21's
            add("≥ rclone", rr >= 1.0, x(rr, 1.0))
        elif c.kind == "bulk":
            add("within 1.2× of rclone", rr >= 1 / 1.2, x(rr, 1 / 1.2))
    mine, theirs = s.get("cpu_s_per_gib"), summ.get("snfs-base", {}).get("cpu_s_per_gib")
    if case_name in ("cold-read", "parallel-read") and mine and theirs:
        add("CPU/GiB half of snfs-base's", theirs / mine >= 2.0, x(theirs / mine, 2.0))
    return out


def cell(s: dict[str, Any] | None, unit: str) -> str:
    if not s:
        return "–"
    if "median" not in s:
        return "error" if s.get("errors") else "–"
    med, lo, hi = s["median"], s["min"], s["max"]
    if unit == "s":
        if med < 1:
            txt = f"{med * 1000:.0f} ({lo * 1000:.0f}–{hi * 1000:.0f}) ms"
        else:
            txt = f"{med:.2f} ({lo:.2f}–{hi:.2f}) s"
    else:
        fmt = (lambda v: f"{v:.0f}") if med >= 100 else (lambda v: f"{v:.1f}")
        txt = f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"
    if s.get("errors"):
        txt += f" [{len(s['errors'])} failed]"
    return txt


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _baseline_table(results: dict[str, Any]) -> list[str]:
    """Every case: this build against the baseline (`--baseline REF`), when it ran."""
    base = results["meta"].get("baseline")
    if not base:
        return []
    rows = []
    for name, c in results["cases"].items():
        summ, unit = c["summary"], CASES[name].unit
        if CASES[name].kind == "wire" or "snfs-base" not in summ:
            continue
        ratio = _ratio(speed_ratio(name, summ, "snfs", "snfs-base"))
        rows.append(
            f"| {name} | {unit} | {cell(summ.get('snfs-base'), unit)} | "
            f"{cell(summ.get('snfs'), unit)} | {ratio} |"
        )
    return [
        "",
        f"Before and after: snfs as of `{base}` (`snfs-base`) and this build, same run:",
        "",
        "| case | unit | snfs-base | snfs | snfs/snfs-base (speed) |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]


def _cpu_table(results: dict[str, Any]) -> list[str]:
    """Throughput cases: each daemon's CPU seconds per GiB moved, and this build against the
    baseline (`--baseline`) when it ran."""
    base = results["meta"].get("baseline")
    systems = [s for s in MOUNTS if s != "snfs-base" or base]
    rows = []
    for name, c in results["cases"].items():
        if CASES[name].unit != "MiB/s" or CASES[name].kind == "wire":
            continue
        summ = c["summary"]
        cpu = [summ.get(s, {}).get("cpu_s_per_gib") for s in systems]
        row = f"| {name} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in cpu)
        if base:
            ratio = speed_ratio(name, summ, "snfs", "snfs-base")
            mine, theirs = cpu[0], cpu[1]
            halved = f"{theirs / mine:.2f}×" if mine and theirs else "–"
            row += f" | {cell(summ.get('snfs-base'), 'MiB/s')} | {_ratio(ratio)} | {halved}"
        rows.append(row + " |")
    if not rows:
        return []
    head = "| case | " + " | ".join(f"{s} CPU s/GiB" for s in systems)
    sep = "| --- " * (len(systems) + 1)
    if base:
        head += f" | snfs-base ({base}) MiB/s | snfs/snfs-base speed | CPU/GiB base/snfs"
        sep += "| --- | --- | --- "
    return [
        "",
        "Daemon CPU (user + system) per GiB moved, medians"
        + (f"; `snfs-base` is snfs as of `{base}`, run side by side in this run:" if base else ":"),
        "",
        head + " |",
        sep + "|",
        *rows,
    ]


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# snfs benchmark — {meta['date']}",
        "",
        f"{meta['repeat']} runs per case and system, systems alternating; each cell is the median "
        f"(min–max). Throughput in MiB/s (higher is better), times in ms or s (lower is better). "
        f"Ratios are **speed** ratios of the medians: > 1× means snfs is faster. "
        f"Sizes: {meta['sizes_text']}.{' **Quick run (small sizes).**' if meta['quick'] else ''}"
        + (
            f" **{meta['latency_ms']:g} ms per request** (a proxy in front of the emulator and "
            f"of rclone serve webdav alike)"
            + (f", answers over a {meta['mbit']:g} Mbit/s link each." if meta.get("mbit") else ".")
            if meta.get("latency_ms")
            else ""
        ),
        "",
        "| case | unit | snfs | curl (limit) | rclone mount | snfs/curl | snfs/rclone "
        "| snfs requests | snfs peak RSS | snfs CPU s/GiB | targets |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, c in results["cases"].items():
        if CASES[name].kind == "wire":
            continue
        summ, unit = c["summary"], CASES[name].unit
        s = summ.get("snfs", {})
        req = "–"
        if "requests_max" in s:
            routes = ", ".join(
                f"{k.replace('GET ', '').replace('{sys_id}', 'id')} {v}"
                if k.startswith("GET")
                else f"{k.replace('{sys_id}', 'id')} {v}"
                for k, v in sorted(s.get("by_route_max", {}).items())
            )
            req = f"{s['requests_median']:g}" + (f" ({routes})" if routes else "")
        rss = f"{s['peak_rss_max'] / MiB:.0f} MiB" if "peak_rss_max" in s else "–"
        cpu = f"{s['cpu_s_per_gib']:.2f}" if "cpu_s_per_gib" in s else "–"
        tg = (
            "; ".join(
                f"{'✅' if t['met'] else '❌' if t['met'] is False else '?'} "
                f"{t['target']}: {t['value']}"
                for t in c["targets"]
            )
            or "–"
        )
        lines.append(
            f"| {name} | {unit} | {cell(summ.get('snfs'), unit)} | {cell(summ.get('curl'), unit)} "
            f"| {cell(summ.get('rclone'), unit)} | {_ratio(c['ratios'].get('snfs/curl'))} "
            f"| {_ratio(c['ratios'].get('snfs/rclone'))} | {req} | {rss} | {cpu} | {tg} |"
        )
    lines += _cpu_table(results) + _baseline_table(results)
    if "wire" in results["cases"]:
        w = results["cases"]["wire"]["summary"]
        lines += [
            "",
            "Wire check (is the emulator the limit?): curl GET of the same file, "
            "server's page cache warm, MiB/s:",
            "",
            "| server | MiB/s | vs nginx | server CPU/wall |",
            "| --- | --- | --- | --- |",
        ]
        ng = w.get("nginx", {}).get("median")
        for sysname, label in (
            ("emu-identity", "emulator /file, identity (as snfs asks for a .bin)"),
            ("emu-gzip", "emulator /file, gzip (as snfs asks for text)"),
            ("nginx", "nginx, static file"),
            ("rclone-serve", "rclone serve webdav"),
        ):
            if sysname in w:
                med = w[sysname].get("median")
                vs = f"{med / ng:.2f}×" if med and ng else "–"
                cpu = w[sysname].get("emulator_cpu_per_wall") if sysname.startswith("emu") else None
                lines.append(
                    f"| {label} | {cell(w[sysname], 'MiB/s')} | {vs} | "
                    f"{'' if cpu is None else f'{cpu:.2f}'} |"
                )
    extra = [f"- {n}" for n in meta.get("notes", [])]
    if extra:
        lines += ["", "Notes:", "", *extra]
    m = meta["machine"]
    lines += [
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, {m.get('mem_gib')} GiB, "
        f"{m.get('os', '?')}, kernel {m.get('kernel')}; Python {m.get('python')}, "
        f"httpx {m.get('httpx', '?')}, pyfuse3 {m.get('pyfuse3', '?')}; "
        f"{' '.join(m.get('curl', '').split()[:2])}; {m.get('rclone', '')}; "
        f"{m.get('nginx', '').replace('nginx version: ', '')}.",
        f"Command: `{meta['command']}`; total time {meta['elapsed_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# py-spy raw (collapsed) stacks -> top functions

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    f = m.group("file")
    for mark in ("site-packages/", "/lib/python3", "/work/main/"):
        if mark in f:
            f = f.split(mark, 1)[1]
            break
    return f"{m.group('func')} ({f})"


def profile_summary(raw: Path, top: int = 25) -> dict[str, Any]:
    self_c: Counter = Counter()
    incl: Counter = Counter()
    threads: Counter = Counter()
    main_threads: set[str] = set()
    total = 0
    if not raw.exists():
        return {"samples": 0}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        thread = next((f for f in parts if f.startswith("thread ")), "thread ?")
        frames = [_short(f) for f in parts if not f.startswith(("process ", "thread "))] or ["?"]
        total += n
        threads[thread] += n
        if any(f.startswith("unrolled_run ") for f in frames):
            main_threads.add(thread)
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return {"samples": 0}

    def pct(c: Counter) -> list[tuple[str, float]]:
        return [(f, round(100 * v / total, 1)) for f, v in c.most_common(top)]

    main = sum(v for t, v in threads.items() if t in main_threads)
    return {
        "samples": total,
        "self": pct(self_c),
        "inclusive": pct(incl),
        "trio_thread_pct": round(100 * main / total, 1),
        "worker_threads_pct": round(100 * (total - main) / total, 1),
    }


def profile_text(case: str, p: dict[str, Any]) -> str:
    lines = [
        f"py-spy profile of the snfs daemon during `{case}` ({p.get('samples', 0)} on-CPU "
        f"samples at 200 Hz; daemon CPU/wall during the run: {p.get('cpu_per_wall', '?')})",
        "",
        f"trio main thread {p.get('trio_thread_pct', '?')}% of the samples, worker threads "
        f"(trio.to_thread: disk I/O, hashing) {p.get('worker_threads_pct', '?')}%",
        "",
        "self time:",
    ]
    lines += [f"  {v:5.1f}%  {f}" for f, v in p.get("self", [])]
    lines += ["", "inclusive (on the stack):"]
    lines += [f"  {v:5.1f}%  {f}" for f, v in p.get("inclusive", [])]
    return "\n".join(lines) + "\n"
