"""`python -m bench`: snfs against the wire's limit (curl) and against rclone mount, in one run.

Sets up the emulator (and rclone serve/mount, nginx for the wire check), creates the data
through the API, runs every case --repeat times with the systems alternating, and writes
`<out>/latest.md` and `<out>/latest.json`. See docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report, util
from bench.cases import CASES, DEFAULT_CASES, Ctx, run_case
from bench.data import Api, Dataset, MiB

HERE = Path(__file__).resolve().parent

FULL = {
    "big": 256 * MiB,
    "rand_n": 1000,
    "par_n": 8,
    "par_size": 32 * MiB,
    "upload": 256 * MiB,
    "ls_n": 1000,
    "find_records": 1000,
    "find_per": 5,
    "cpr_n": 200,
    "rss": 1024 * MiB,
    "small_n": 50,
    "small_size": 8 * 1024,
}
QUICK = {
    "big": 8 * MiB,
    "rand_n": 100,
    "par_n": 4,
    "par_size": 2 * MiB,
    "upload": 8 * MiB,
    "ls_n": 100,
    "find_records": 50,
    "find_per": 5,
    "cpr_n": 20,
    "rss": 32 * MiB,
    "small_n": 20,
    "small_size": 8 * 1024,
}
# --latency: the sizes of the WAN table in docs/PERFORMANCE.md (many small operations, where a
# round trip per request is what costs; bulk sizes kept modest so a run stays under ~30 min).
WAN = {
    "big": 64 * MiB,
    "rand_n": 200,
    "par_n": 8,
    "par_size": 64 * MiB,
    "upload": 64 * MiB,
    "ls_n": 50,
    "find_records": 100,
    "find_per": 5,
    "cpr_n": 50,
    "cpr_size": 8 * 1024,
    "rss": 256 * MiB,
    "small_n": 50,
    "small_size": 8 * 1024,
}
MOUNT_SYSTEMS = ("snfs", "rclone")


def human(n: int) -> str:
    return f"{n // 2**30} GiB" if n >= 2**30 and n % 2**30 == 0 else f"{n // MiB} MiB"


def sizes_text(s: dict[str, int]) -> str:
    return (
        f"file {human(s['big'])}, {s['rand_n']} random reads, {s['par_n']}×{human(s['par_size'])} "
        f"parallel, upload {human(s['upload'])}, ls {s['ls_n']} files, find "
        f"{s['find_records']}×{s['find_per']}, cp -r/rm {s['cpr_n']} files, rss case "
        f"{human(s['rss'])}, {s['small_n']} small files of {s['small_size'] // 1024} KiB"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per case and system (default 3)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--cases", help=f"comma list (default all): {','.join(DEFAULT_CASES)}")
    p.add_argument(
        "--systems",
        default="snfs,curl,rclone",
        help="comma list of snfs,curl,rclone (default all three)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=HERE / "results",
        help="where latest.md/latest.json go (default bench/results)",
    )
    p.add_argument(
        "--workdir", type=Path, help="scratch directory (default: a new temp dir, removed)"
    )
    p.add_argument(
        "--profile",
        default="",
        help="comma list of cases: one extra snfs run each under py-spy (not measured)",
    )
    p.add_argument(
        "--snfs-opt",
        action="append",
        default=[],
        help="extra `snfs mount` option (repeatable), e.g. --snfs-opt=--max-in-flight=16",
    )
    p.add_argument(
        "--emulator-opt",
        action="append",
        default=[],
        help="extra `snfs emulator` option (repeatable), e.g. --emulator-opt=--no-gzip",
    )
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only re-write <out>/latest.md from a results JSON (no benchmark)",
    )
    p.add_argument(
        "--baseline",
        metavar="REF",
        help="also run snfs as of git REF (e.g. main) as system `snfs-base`, side by side with "
        "this build in the same run (before/after)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument(
        "--mbit",
        type=float,
        metavar="MBIT",
        help="with --latency: each proxy's link bandwidth for answers, Mbit/s (default: "
        "loopback speed)",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="put a proxy that delays every request by MS in front of the emulator (snfs) and "
        "of rclone serve webdav (rclone); WAN sizes; curl and the wire case are not run",
    )
    a = p.parse_args(argv)
    default_cases = [c for c in DEFAULT_CASES if not (a.latency and c == "wire")] + [LARGE]
    a.case_list = [c.strip() for c in (a.cases or ",".join(default_cases)).split(",") if c.strip()]
    # The large-table case has its own emulator, data and report (bench/large.py).
    a.large = LARGE in a.case_list
    a.case_list = [c for c in a.case_list if c != LARGE]
    for c in a.case_list:
        if c not in CASES:
            p.error(f"unknown case {c!r}; known: {', '.join(CASES)}")
    a.system_list = [s.strip() for s in a.systems.split(",") if s.strip()]
    for s in a.system_list:
        if s not in ("snfs", "curl", "rclone"):
            p.error(f"unknown system {s!r}")
    if a.latency:
        # curl would talk to the emulator directly, around the proxy: not comparable.
        a.system_list = [s for s in a.system_list if s != "curl"]
    a.profile_list = [c.strip() for c in a.profile.split(",") if c.strip()]
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    return a


LARGE = "large-table"


def run_large(a: argparse.Namespace) -> str:
    """bench/large.py at the run's --latency (100 ms, the issue's WAN, when none is given)."""
    from bench import large

    args = ["--latency", f"{a.latency or 100:g}", "--out", str(a.out)]
    if a.quick:
        args += ["--attachments", "25000", "--records", "8000", "--dir-cache-time", "5"]
    large.main(args)
    return (a.out / "large.md").read_text()


def ensure_py_spy() -> None:
    """py-spy is a benchmark-only tool: installed into this venv on demand, never a dependency."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists() and not shutil.which("py-spy"):
        util.log("installing py-spy into the venv (for --profile)")
        import subprocess

        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.large and not a.case_list:
        run_large(a)
        return 0
    if a.render:
        md = report.markdown(json.loads(a.render.read_text()))
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "latest.md").write_text(md)
        print(md)
        return 0
    started = time.time()
    sizes = dict(QUICK if a.quick else WAN if a.latency else FULL)
    wire = "wire" in a.case_list
    need_tools = (
        ["curl"]
        + (["rclone"] if "rclone" in a.system_list or wire else [])
        + (["nginx"] if wire else [])
    )
    tools = util.ensure_tools(need_tools)
    notes: list[str] = []
    for t, path in tools.items():
        if not path:
            notes.append(f"`{t}` is missing and could not be installed: its columns are empty.")
    systems = [s for s in a.system_list if s == "snfs" or tools.get(s)]
    if a.baseline:
        systems.insert(systems.index("snfs") + 1 if "snfs" in systems else 0, "snfs-base")
    if a.profile_list:
        ensure_py_spy()
    if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        print("bench: needs /dev/fuse and fusermount3 (apt package fuse3)", file=sys.stderr)
        return 2

    work = a.workdir or Path(tempfile.mkdtemp(prefix="snfs-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    util.log(f"scratch directory {work}")
    emu = rserver = nginx = None
    proxies: list[Any] = []
    mounts: dict[str, Any] = {}
    results: dict[str, Any] = {"cases": {}}
    try:
        from bench.systems import (
            Emulator,
            LatencyProxy,
            Nginx,
            RcloneMount,
            RcloneServer,
            SnfsMount,
            baseline_checkout,
        )

        def served(upstream: str, name: str) -> str:
            """The URL a system under test uses: the server, or a latency proxy before it."""
            if not a.latency:
                return upstream
            proxies.append(LatencyProxy(upstream, a.latency, work, name, a.mbit))
            util.log(f"{name}: {a.latency:g} ms per request through {proxies[-1].url}")
            return proxies[-1].url

        emu = Emulator(work, *a.emulator_opt)
        util.log(f"emulator at {emu.url}")
        api = Api(emu.url)
        root, src = work / "rclone-root", work / "src"
        root.mkdir(exist_ok=True)
        ds = Dataset(api, root, src, sizes)
        drop_ok = util.drop_caches()
        if drop_ok:
            notes.append(
                "Caches were dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before "
                "every cold run, and every run uses a fresh mount."
            )
        else:
            notes.append(
                "Dropping caches was refused in this sandbox: cold runs rely on a fresh "
                "mount (fresh snfs content cache, fresh rclone VFS) only; the server side's "
                "file may be in the page cache."
            )
        t0 = time.time()
        for part in dict.fromkeys(p for c in a.case_list for p in CASES[c].needs):
            util.log(f"data: {part}")
            ds.need(part)
        util.log(f"data ready in {time.time() - t0:.0f} s")
        # The servers of the local copy start once it is complete; from here on it changes
        # only through rclone serve webdav (ds.dav).
        if "rclone" in systems or wire and tools.get("rclone"):
            rserver = RcloneServer(root, work)
            ds.dav = rserver
            util.log(f"rclone serve webdav at {rserver.url}")
        if "rclone" in systems:
            mounts["rclone"] = RcloneMount(rserver, work, served(rserver.url, "rclone"))
        mounts["snfs"] = SnfsMount(served(emu.url, "emulator"), work, a.snfs_opt)
        if a.baseline:
            mounts["snfs-base"] = SnfsMount(
                served(emu.url, "emulator-base"),
                work,
                a.snfs_opt,
                name="snfs-base",
                source=baseline_checkout(a.baseline, work),
            )
            util.log(f"snfs-base: snfs as of {a.baseline}")
        if wire and tools.get("nginx"):
            nginx = Nginx(root, work)
            util.log(f"nginx at {nginx.url}")
        ctx = Ctx(
            api=api,
            ds=ds,
            sizes=sizes,
            work=work,
            emu=emu,
            mounts=mounts,
            drop_ok=drop_ok,
            nginx=nginx,
            rclone_server=rserver,
        )

        for name in a.case_list:
            case = CASES[name]
            if case.kind == "wire":
                case_systems = [
                    s
                    for s in case.systems
                    if (s != "nginx" or nginx) and (s != "rclone-serve" or rserver)
                ]
            else:
                case_systems = [
                    s
                    for s in systems
                    if s in case.systems or (s == "snfs-base" and "snfs" in case.systems)
                ]
            runs: list[dict[str, Any]] = []
            for rep in range(a.repeat):
                k = rep % len(case_systems)
                for system in case_systems[k:] + case_systems[:k]:  # alternate the order
                    try:
                        r = run_case(ctx, case, system, rep)
                    except Exception as e:
                        traceback.print_exc()
                        r = {"system": system, "error": f"{type(e).__name__}: {e}"[:500]}
                        for m in mounts.values():
                            m.unmount()
                    r["rep"] = rep
                    runs.append(r)
                    util.log(
                        f"{name} rep {rep} {system}: "
                        + ", ".join(
                            f"{k}={v}"
                            for k, v in r.items()
                            if k not in ("system", "rep", "by_route")
                        )
                    )
            summ = report.summarize(name, runs)
            results["cases"][name] = {
                "title": case.title,
                "unit": case.unit,
                "kind": case.kind,
                "describe": case.describe.format(
                    **{
                        k: human(v) if k in ("big", "par_size", "upload", "rss") else v
                        for k, v in sizes.items()
                    }
                ),
                "runs": runs,
                "summary": summ,
                "ratios": {
                    "snfs/curl": report.speed_ratio(name, summ, "snfs", "curl"),
                    "snfs/rclone": report.speed_ratio(name, summ, "snfs", "rclone"),
                },
                "targets": report.targets(name, summ),
            }

        for name in a.profile_list:
            if name not in results["cases"] or CASES[name].kind == "wire":
                continue
            util.log(f"profiling snfs during {name}")
            raw = work / f"profile-{name}.raw"
            ctx.profile = {"out": raw}
            try:
                r = run_case(ctx, CASES[name], "snfs", 99)
            except Exception as e:
                traceback.print_exc()
                r = {"error": str(e)}
            ctx.profile = None
            prof = report.profile_summary(raw)
            if r.get("daemon_cpu_s") is not None and r.get("seconds"):
                prof["cpu_per_wall"] = round(r["daemon_cpu_s"] / r["seconds"], 2)
            prof["run"] = {k: v for k, v in r.items() if k != "by_route"}
            results["cases"][name]["profile"] = prof
            a.out.mkdir(parents=True, exist_ok=True)
            (a.out / f"profile-{name}.txt").write_text(report.profile_text(name, prof))
    finally:
        for m in mounts.values():
            try:
                m.unmount()
            except Exception:
                traceback.print_exc()
        for proc in (*proxies, nginx, rserver, emu):
            if proc is not None:
                proc.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    results["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeat": a.repeat,
        "quick": a.quick,
        "latency_ms": a.latency,
        "mbit": a.mbit,
        "systems": systems,
        "baseline": a.baseline,
        "sizes": sizes,
        "sizes_text": sizes_text(sizes),
        "drop_caches": drop_ok,
        "notes": notes,
        "machine": util.machine_info(),
        "elapsed_s": round(time.time() - started, 1),
    }
    results = {"meta": results["meta"], "cases": results["cases"]}
    a.out.mkdir(parents=True, exist_ok=True)
    md = report.markdown(results)
    if a.large:
        md += "\n## Large table\n\n" + run_large(a)
    stem = f"latest-{a.latency:g}ms" if a.latency else "latest"  # loopback results stay
    if a.mbit:
        stem += f"-{a.mbit:g}mbit"
    (a.out / f"{stem}.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (a.out / f"{stem}.md").write_text(md)
    print(md)
    return 0
