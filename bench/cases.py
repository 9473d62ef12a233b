"""The benchmark cases. Each runs one measured operation on one system:

- `snfs` and `rclone`: the same shell command on a fresh mount (`/<table>/<record>/<file>` on
  both), so the file-system side is identical;
- `curl`: the same bytes straight from the emulator's API, on one keep-alive connection where
  the operation has several requests: the limit of the wire.

A run returns seconds, bytes moved, and for snfs the emulator's request counts and the daemon's
peak RSS and CPU time.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import util
from bench.data import AUTH, Dataset, MiB
from snfs.children import snfs_command
from snfs.compressible import gzip_pays

CURL = ["curl", "-sS", "-f", "-u", f"{AUTH[0]}:{AUTH[1]}"]
# curl asks for the bench's large files (`*.bin`, application/octet-stream) as snfs does:
# gzip only where it pays (snfs.compressible), so "curl" stays the limit of the same request.
AS_SNFS = ["--compressed"] if gzip_pays("application/octet-stream", "big.bin") else []
SNFS_SYSTEMS = ("snfs", "snfs-base")  # this build, and `--baseline REF`'s build
# Routes that are "per file" for the listing targets.
PER_FILE_ROUTES = ("GET /attachment/{sys_id}", "GET /attachment/{sys_id}/file")


@dataclass
class Case:
    name: str
    title: str
    unit: str  # "MiB/s" (throughput, bigger is better) or "s" (time)
    needs: tuple[str, ...]
    kind: str  # "bulk", "listing", "small" (for the rclone targets), "wire"
    cold: bool = True
    systems: tuple[str, ...] = ("snfs", "curl", "rclone")
    describe: str = ""


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case(
            "cold-read",
            "cold sequential read, 1 file",
            "MiB/s",
            ("big",),
            "bulk",
            describe="`cat` of one {big} file on a fresh mount, caches dropped (curl: GET /file, "
            "gzip accepted as snfs does)",
        ),
        Case(
            "warm-read",
            "warm re-read of it",
            "MiB/s",
            ("big",),
            "bulk",
            cold=False,
            describe="`cat` of the same file a second time on the same mount (curl: a second GET)",
        ),
        Case(
            "random-read",
            "random 4 KiB reads, cold file",
            "s",
            ("big",),
            "bulk",
            describe="{rand_n} `pread`s of 4 KiB at seeded 4 KiB-aligned offsets in a cold {big} "
            "file "
            "(curl: the API has no Range, so: download the file, then the same preads)",
        ),
        Case(
            "parallel-read",
            "parallel cold reads",
            "MiB/s",
            ("par",),
            "bulk",
            describe="{par_n} concurrent `cat`s of distinct {par_size} files, caches dropped "
            "(curl: {par_n} concurrent curls)",
        ),
        Case(
            "upload",
            "upload with cp",
            "MiB/s",
            ("up",),
            "bulk",
            cold=False,
            describe="`cp` of a local {upload} file into a record, until the upload is stored "
            "(snfs: close returns after the POST; rclone: until its write-back queue is empty; "
            "curl: POST /attachment/file streaming the file)",
        ),
        Case(
            "ls-l",
            "ls -l of a record",
            "s",
            ("ls",),
            "listing",
            describe="`ls -l` of a record with {ls_n} attachments on a fresh mount (curl: one GET "
            "/attachment page)",
        ),
        Case(
            "find-stat",
            "find + stat over a table",
            "s",
            ("find",),
            "listing",
            describe="`find TABLE -type f | xargs stat` over {find_records} records × {find_per} "
            "attachments on a fresh mount "
            "(curl: GET /attachment pages of 1000 on one connection)",
        ),
        Case(
            "cp-r",
            "cp -r of a folder into a record",
            "s",
            ("cpr",),
            "small",
            cold=False,
            describe="`cp -r DIR/. RECORD/` of {cpr_n} files of 1–200 KiB into a fresh record, "
            "until stored (snfs: `cp` then `snfs sync`, which returns at once without "
            "--write-back; rclone: until its upload queue is empty; "
            "curl: the same POSTs, sequential, one connection)",
        ),
        Case(
            "rm",
            "rm of those files",
            "s",
            ("cpr",),
            "small",
            cold=False,
            describe="`rm -f RECORD/*` of {cpr_n} attachments on a fresh mount (curl: one list "
            "GET + the DELETEs on one connection)",
        ),
        Case(
            "ls-busy",
            "ls -l while 8 large downloads run",
            "s",
            ("par", "ls"),
            "listing",
            systems=("snfs", "rclone"),
            describe="`ls -l` of a record with {ls_n} attachments, started while {par_n} "
            "`cat`s of {par_size} files run on the same fresh mount (the time of the `ls` "
            "alone)",
        ),
        Case(
            "cat-small",
            "cat of a record's small files",
            "s",
            ("small",),
            "small",
            describe="`cat RECORD/*` of {small_n} files of {small_size} B on a fresh mount "
            "(curl: the same GETs, sequential, one connection)",
        ),
        Case(
            "grep-r",
            "grep -r over a record",
            "s",
            ("small",),
            "small",
            describe="`grep -rl NEEDLE RECORD` over the same {small_n} files on a fresh mount "
            "(curl: as cat)",
        ),
        Case(
            "cat-one",
            "cat of one file, record never listed",
            "s",
            ("small",),
            "small",
            describe="`cat TABLE/RECORD/FILE` on a fresh mount, nothing listed before "
            "(curl: the record's listing, then the file)",
        ),
        Case(
            "rss-1g",
            "copy in and out (peak RSS)",
            "MiB/s",
            ("rss",),
            "bulk",
            cold=False,
            describe="`cp` of a {rss} local file into a record, drop caches, `cat` it back; "
            "MiB/s over both directions; the daemon's peak RSS (VmHWM) through it",
        ),
        Case(
            "wire",
            "emulator vs nginx, one file",
            "MiB/s",
            ("big",),
            "wire",
            cold=False,
            systems=("emu-identity", "emu-gzip", "nginx", "rclone-serve"),
            describe="curl GET of the {big} file, server's page cache warm: emulator /file "
            "identity and gzip, "
            "nginx serving it statically, `rclone serve webdav` serving it",
        ),
    ]
}

DEFAULT_CASES = [c for c in CASES]


@dataclass
class Ctx:
    api: Any
    ds: Dataset
    sizes: dict[str, int]
    work: Path
    emu: Any
    mounts: dict[str, Any]
    drop_ok: bool
    nginx: Any = None
    rclone_server: Any = None
    profile: dict[str, Any] | None = None  # set for a profiled run: {"out": Path}
    counter: int = 0
    notes: list[str] = field(default_factory=list)


def list_root(mp: Path) -> None:
    """Before a small-operation case, on every system alike: list the mount's root once, so
    what is measured is the operation, not the mount's start-up (snfs lists its root in the
    background when it starts; rclone lists it on first use)."""
    os.listdir(mp)


def _sh(cmd: str) -> float:
    return util.timed(["sh", "-c", cmd])


def _q(p: Path | str) -> str:
    return shlex.quote(str(p))


# ----------------------------------------------------------------------------------------------
# One measured run


class Run:
    """Collects one run's figures around the measured operation."""

    def __init__(self, ctx: Ctx, system: str) -> None:
        self.ctx = ctx
        self.system = system
        self.seconds = 0.0
        self.bytes = 0
        self.extra: dict[str, Any] = {}
        self._pid: int | None = None

    def begin(self, pid: int | None = None) -> None:
        """Right before the measured operation: reset the emulator's counters."""
        self._pid = pid
        self.ctx.api.reset_stats()
        self._cpu0 = util.cpu_seconds(pid) if pid else None
        self._emu0 = util.cpu_seconds(self.ctx.emu.pid)

    def end(self) -> None:
        st = self.ctx.api.stats()
        self.extra["requests"] = st["total"]
        self.extra["by_route"] = {k: v for k, v in st["by_route"].items() if v}
        emu1 = util.cpu_seconds(self.ctx.emu.pid)
        if emu1 is not None and self._emu0 is not None:
            self.extra["emulator_cpu_s"] = round(emu1 - self._emu0, 3)
        if self._pid:
            cpu1 = util.cpu_seconds(self._pid)
            if cpu1 is not None and self._cpu0 is not None:
                self.extra["daemon_cpu_s"] = round(cpu1 - self._cpu0, 3)
            rss = util.peak_rss(self._pid)
            if rss:
                self.extra["peak_rss"] = rss

    def result(self) -> dict[str, Any]:
        r = {"system": self.system, "seconds": round(self.seconds, 6), "bytes": self.bytes}
        if self.seconds > 0 and self.bytes:
            r["mib_s"] = round(self.bytes / MiB / self.seconds, 2)
        r.update(self.extra)
        return r


class Profiler:
    """py-spy attached to the snfs daemon for the measured operation (a separate, unmeasured "
    "run)."""

    def __init__(self, pid: int, out: Path) -> None:
        spy = str(Path(sys.executable).parent / "py-spy")
        if not os.path.exists(spy):
            spy = shutil.which("py-spy") or "py-spy"
        self.out = out
        self.proc = subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(pid),
                "-f",
                "raw",
                "-o",
                str(out),
                "-r",
                "200",
                "--nonblocking",
                "--threads",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # let it attach

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            util.stop_proc(self.proc)


def measure_mount(
    ctx: Ctx,
    system: str,
    case: Case,
    op: Callable[[Path, Run], None],
    before: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    m = ctx.mounts[system]
    mp = m.mount()
    run = Run(ctx, system)
    prof = None
    try:
        if before:
            before(mp)
        if case.cold:
            util.drop_caches()
        if ctx.profile and system == "snfs":
            prof = Profiler(m.pid, ctx.profile["out"])
        t0 = time.perf_counter()
        run.begin(m.pid)
        op(mp, run)
        run.end()
        run.extra.setdefault("wall_s", round(time.perf_counter() - t0, 3))
        if system == "rclone" and m.pid:
            rss = util.peak_rss(m.pid)
            if rss:
                run.extra["peak_rss"] = rss
    finally:
        if prof:
            prof.stop()
        m.unmount()
    return run.result()


def measure_curl(ctx: Ctx, case: Case, op: Callable[[Run], None]) -> dict[str, Any]:
    run = Run(ctx, "curl")
    if case.cold:
        util.drop_caches()
    run.begin(None)
    op(run)
    run.end()
    return run.result()


# ----------------------------------------------------------------------------------------------
# The cases


def run_case(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ctx.counter += 1
    fn = globals()["case_" + case.name.replace("-", "_")]
    return fn(ctx, case, system, rep)


def _big_paths(ctx: Ctx) -> tuple[str, str]:
    ds = ctx.ds
    return f"incident/{ds.big_rec}/big.bin", ds.api.file_url(ds.ids["big.bin"])


def case_cold_read(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    rel, url = _big_paths(ctx)
    size = ctx.sizes["big"]
    if system == "curl":

        def op(run: Run) -> None:
            run.seconds = util.timed([*CURL, *AS_SNFS, "-o", "/dev/null", url])
            run.bytes = size

        return measure_curl(ctx, case, op)

    def mop(mp: Path, run: Run) -> None:
        run.seconds = util.timed(["cat", str(mp / rel)], stdout=subprocess.DEVNULL)
        run.bytes = size

    return measure_mount(ctx, system, case, mop)


def case_warm_read(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    rel, url = _big_paths(ctx)
    size = ctx.sizes["big"]
    if system == "curl":
        util.run([*CURL, *AS_SNFS, "-o", "/dev/null", url])

        def op(run: Run) -> None:
            run.seconds = util.timed([*CURL, *AS_SNFS, "-o", "/dev/null", url])
            run.bytes = size

        return measure_curl(ctx, case, op)

    def first(mp: Path) -> None:
        util.run(["cat", str(mp / rel)], stdout=subprocess.DEVNULL)

    def mop(mp: Path, run: Run) -> None:
        run.seconds = util.timed(["cat", str(mp / rel)], stdout=subprocess.DEVNULL)
        run.bytes = size

    return measure_mount(ctx, system, case, mop, before=first)


def _offsets(ctx: Ctx) -> list[int]:
    rng = random.Random("random-read")
    blocks = ctx.sizes["big"] // 4096
    return [rng.randrange(blocks) * 4096 for _ in range(ctx.sizes["rand_n"])]


def _preads(path: Path, offsets: list[int]) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        n = 0
        for off in offsets:
            n += len(os.pread(fd, 4096, off))
        return n
    finally:
        os.close(fd)


def case_random_read(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    rel, url = _big_paths(ctx)
    offsets = _offsets(ctx)
    if system == "curl":
        tmp = ctx.work / "random-read.tmp"

        def op(run: Run) -> None:
            t0 = time.perf_counter()
            util.run([*CURL, *AS_SNFS, "-o", str(tmp), url])
            got = _preads(tmp, offsets)
            run.seconds = time.perf_counter() - t0
            run.extra["read_bytes"] = got

        try:
            return measure_curl(ctx, case, op)
        finally:
            tmp.unlink(missing_ok=True)

    def mop(mp: Path, run: Run) -> None:
        t0 = time.perf_counter()
        got = _preads(mp / rel, offsets)
        run.seconds = time.perf_counter() - t0
        run.extra["read_bytes"] = got

    return measure_mount(ctx, system, case, mop)


def case_parallel_read(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ds, n, size = ctx.ds, ctx.sizes["par_n"], ctx.sizes["par_size"]
    if system == "curl":
        urls = [ds.api.file_url(ds.ids[f"p{i}.bin"]) for i in range(n)]
        curl = " ".join(map(_q, CURL))
        enc = " ".join(AS_SNFS)
        cmd = "".join(f"{curl} {enc} -o /dev/null {_q(u)} & " for u in urls) + "wait"

        def op(run: Run) -> None:
            run.seconds = _sh(cmd)
            run.bytes = n * size

        return measure_curl(ctx, case, op)

    def mop(mp: Path, run: Run) -> None:
        files = [mp / "incident" / ds.par_rec / f"p{i}.bin" for i in range(n)]
        run.seconds = _sh("".join(f"cat {_q(f)} > /dev/null & " for f in files) + "wait")
        run.bytes = n * size

    return measure_mount(ctx, system, case, mop)


def _check_stored(ctx: Ctx, rec: str, name: str, size: int) -> str:
    rows = [a for a in ctx.api.list(f"table_sys_id={rec}^file_name={name}")]
    if not rows or int(rows[0]["size_bytes"]) != size:
        raise RuntimeError(f"upload check: {name} in {rec} is {rows[:1]}")
    return rows[0]["sys_id"]


def _curl_upload(ctx: Ctx, table: str, rec: str, name: str, src: Path) -> None:
    util.run(
        [
            *CURL,
            "-X",
            "POST",
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            "Expect:",
            "-T",
            str(src),
            "-o",
            "/dev/null",
            ctx.api.upload_url(table, rec, name),
        ]
    )


def case_upload(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ds, size = ctx.ds, ctx.sizes["upload"]
    name = f"up-{system}-{rep}-{ctx.counter}.bin"
    util.run(["cat", str(ds.up_src)], stdout=subprocess.DEVNULL)  # the source in page cache
    try:
        if system == "curl":

            def op(run: Run) -> None:
                t0 = time.perf_counter()
                _curl_upload(ctx, "incident", ds.up_rec, name, ds.up_src)
                run.seconds = time.perf_counter() - t0
                run.bytes = size

            r = measure_curl(ctx, case, op)
            _check_stored(ctx, ds.up_rec, name, size)
            return r

        def mop(mp: Path, run: Run) -> None:
            t0 = time.perf_counter()
            util.run(["cp", str(ds.up_src), str(mp / "incident" / ds.up_rec / name)])
            if system == "rclone":
                ctx.mounts["rclone"].wait_uploads([(ds.rpath("incident", ds.up_rec, name), size)])
            run.seconds = time.perf_counter() - t0
            run.bytes = size

        r = measure_mount(ctx, system, case, mop)
        if system in SNFS_SYSTEMS:
            _check_stored(ctx, ds.up_rec, name, size)
        elif (ds.rpath("incident", ds.up_rec, name)).stat().st_size != size:
            raise RuntimeError("rclone upload check failed")
        return r
    finally:
        ds.cleanup_uploads()


def case_ls_l(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ds = ctx.ds
    if system == "curl":
        url = (
            f"{ds.api.url}/api/now/attachment?sysparm_query=table_sys_id%3D{ds.ls_rec}"
            f"&sysparm_limit=1000"
        )

        def op(run: Run) -> None:
            run.seconds = util.timed([*CURL, "-o", "/dev/null", url])

        return measure_curl(ctx, case, op)

    def mop(mp: Path, run: Run) -> None:
        t0 = time.perf_counter()
        p = subprocess.run(["ls", "-l", str(mp / "problem" / ds.ls_rec)], capture_output=True)
        run.seconds = time.perf_counter() - t0
        lines = p.stdout.count(b"\n") - 1
        if p.returncode or lines != ctx.sizes["ls_n"]:
            raise RuntimeError(f"ls -l on {system}: rc {p.returncode}, {lines} entries")

    return measure_mount(ctx, system, case, mop, before=list_root)


def case_find_stat(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ds = ctx.ds
    total = ctx.sizes["find_records"] * ctx.sizes["find_per"]
    if system == "curl":
        urls = [
            f"{ds.api.url}/api/now/attachment?sysparm_query=table_name%3Dsc_task"
            f"&sysparm_limit=1000&sysparm_offset={off}"
            for off in range(0, total, 1000)
        ]

        def op(run: Run) -> None:
            run.seconds = util.timed([*CURL, *urls], stdout=subprocess.DEVNULL)

        return measure_curl(ctx, case, op)

    def mop(mp: Path, run: Run) -> None:
        cmd = f"find {_q(mp / 'sc_task')} -type f -print0 | xargs -0 stat -c '%s %Y' | wc -l"
        t0 = time.perf_counter()
        p = subprocess.run(["sh", "-c", cmd], capture_output=True)
        run.seconds = time.perf_counter() - t0
        n = int(p.stdout.strip() or 0)
        if n != total:
            raise RuntimeError(f"find on {system} saw {n} files of {total}: {p.stderr[-500:]!r}")

    return measure_mount(ctx, system, case, mop)


def _fresh_rec(ctx: Ctx, what: str, system: str, rep: int) -> str:
    return ctx.ds.fresh_record(
        "change_request", f"{what}-{system}-{rep}-{ctx.counter}-{time.time()}"
    )


def _drop_rec(ctx: Ctx, rec: str) -> None:
    ctx.api.delete_where(f"table_sys_id={rec}")
    ctx.ds.drop_local("change_request", rec)


def case_cp_r(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ds = ctx.ds
    rec = _fresh_rec(ctx, "cpr", system, rep)
    n = len(ds.cpr_files)
    util.run(f"cat {_q(ds.cpr_src)}/* > /dev/null")
    try:
        if system == "curl":
            cfg = ctx.work / "cpr-curl.cfg"
            lines = [
                'request = "POST"',
                'header = "Content-Type: application/octet-stream"',
                'header = "Expect:"',
            ]
            for p in ds.cpr_files:
                lines.append(f'url = "{ds.api.upload_url("change_request", rec, p.name)}"')
                lines.append(f'upload-file = "{p}"')
            cfg.write_text("\n".join(lines) + "\n")

            def op(run: Run) -> None:
                run.seconds = util.timed([*CURL, "-K", str(cfg)], stdout=subprocess.DEVNULL)

            r = measure_curl(ctx, case, op)
        else:

            def mop(mp: Path, run: Run) -> None:
                t0 = time.perf_counter()
                util.run(["cp", "-r", f"{ds.cpr_src}/.", str(mp / "change_request" / rec) + "/"])
                if system in SNFS_SYSTEMS:
                    # With --write-back cp returns before the uploads end: the clock runs until
                    # `snfs sync` says the instance has every file (without it, sync returns at
                    # once, so both modes are timed the same way).
                    util.run(snfs_command("sync", str(mp)))
                if system == "rclone":
                    ctx.mounts["rclone"].wait_uploads(
                        [
                            (ds.rpath("change_request", rec, p.name), p.stat().st_size)
                            for p in ds.cpr_files
                        ]
                    )
                run.seconds = time.perf_counter() - t0

            r = measure_mount(ctx, system, case, mop, before=list_root)
        if system == "rclone":
            got = len(list(ds.rpath("change_request", rec).iterdir()))
        else:
            got = len(ctx.api.list(f"table_sys_id={rec}"))
        if got != n:
            raise RuntimeError(f"cp -r on {system}: {got} of {n} files stored")
        return r
    finally:
        _drop_rec(ctx, rec)


def case_rm(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    from bench.data import pmap

    ds = ctx.ds
    rec = _fresh_rec(ctx, "rm", system, rep)
    try:
        if system == "rclone":
            for p in ds.cpr_files:
                ds.put_local("change_request", rec, p.name, p.read_bytes())
        else:
            ids = pmap(
                lambda p: ctx.api.upload("change_request", rec, p.name, p.read_bytes()),
                ds.cpr_files,
            )
        if system == "curl":
            list_url = (
                f"{ds.api.url}/api/now/attachment?sysparm_query=table_sys_id%3D{rec}"
                f"&sysparm_limit=1000"
            )
            cmd = [*CURL, list_url, "--next", *CURL, "-X", "DELETE", *map(ds.api.file_url, ids)]
            cmd = [c[:-5] if c.endswith("/file") else c for c in cmd]  # DELETE /attachment/{id}

            def op(run: Run) -> None:
                run.seconds = util.timed(cmd, stdout=subprocess.DEVNULL)

            r = measure_curl(ctx, case, op)
        else:

            def mop(mp: Path, run: Run) -> None:
                run.seconds = _sh(f"rm -f {_q(mp / 'change_request' / rec)}/*")

            r = measure_mount(ctx, system, case, mop, before=list_root)
        left = (
            len(list(ds.rpath("change_request", rec).iterdir()))
            if system == "rclone"
            else len(ctx.api.list(f"table_sys_id={rec}"))
        )
        if left:
            raise RuntimeError(f"rm on {system}: {left} files left")
        return r
    finally:
        _drop_rec(ctx, rec)


def case_rss_1g(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ds, size = ctx.ds, ctx.sizes["rss"]
    name = f"rss-{system}-{rep}-{ctx.counter}.bin"
    util.run(["cat", str(ds.rss_src)], stdout=subprocess.DEVNULL)
    try:
        if system == "curl":

            def op(run: Run) -> None:
                t0 = time.perf_counter()
                _curl_upload(ctx, "incident", ds.rss_rec, name, ds.rss_src)
                t_in = time.perf_counter() - t0
                sid = _check_stored(ctx, ds.rss_rec, name, size)
                util.drop_caches()
                t_out = util.timed([*CURL, *AS_SNFS, "-o", "/dev/null", ds.api.file_url(sid)])
                run.seconds, run.bytes = t_in + t_out, 2 * size
                run.extra.update(in_s=round(t_in, 3), out_s=round(t_out, 3))

            return measure_curl(ctx, case, op)

        def mop(mp: Path, run: Run) -> None:
            dst = mp / "incident" / ds.rss_rec / name
            t0 = time.perf_counter()
            util.run(["cp", str(ds.rss_src), str(dst)])
            if system == "rclone":
                ctx.mounts["rclone"].wait_uploads([(ds.rpath("incident", ds.rss_rec, name), size)])
            t_in = time.perf_counter() - t0
            util.drop_caches()
            t_out = util.timed(["cat", str(dst)], stdout=subprocess.DEVNULL)
            run.seconds, run.bytes = t_in + t_out, 2 * size
            run.extra.update(in_s=round(t_in, 3), out_s=round(t_out, 3))

        return measure_mount(ctx, system, case, mop)
    finally:
        ds.cleanup_uploads()


def case_wire(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ds, size = ctx.ds, ctx.sizes["big"]
    rel = f"incident/{ds.big_rec}/big.bin"
    url = ds.api.file_url(ds.ids["big.bin"])
    cmd = {
        "emu-identity": [*CURL, "-o", "/dev/null", url],
        "emu-gzip": [*CURL, "--compressed", "-o", "/dev/null", url],
        "nginx": ["curl", "-sS", "-f", "-o", "/dev/null", f"{ctx.nginx.url}/{rel}"],
        "rclone-serve": ["curl", "-sS", "-f", "-o", "/dev/null", f"{ctx.rclone_server.url}/{rel}"],
    }[system]
    util.run(cmd)  # warm: the server's page cache holds the file
    run = Run(ctx, system)
    run.begin(None)
    run.seconds = util.timed(cmd)
    run.bytes = size
    run.end()
    return run.result()


def _small_curl(ctx: Ctx, case: Case, names: list[str]) -> dict[str, Any]:
    ds = ctx.ds
    by_name = {a["file_name"]: a["sys_id"] for a in ds.api.list(f"table_sys_id={ds.small_rec}")}
    urls = [ds.api.file_url(by_name[n]) for n in names]

    def op(run: Run) -> None:
        run.seconds = util.timed([*CURL, "--compressed", *urls], stdout=subprocess.DEVNULL)
        run.bytes = ctx.sizes["small_size"] * len(names)

    return measure_curl(ctx, case, op)


def case_cat_small(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ds = ctx.ds
    if system == "curl":
        return _small_curl(ctx, case, ds.small_names)
    want = ctx.sizes["small_size"] * len(ds.small_names)

    def mop(mp: Path, run: Run) -> None:
        t0 = time.perf_counter()
        p = subprocess.run(
            ["sh", "-c", f"cat {_q(mp / 'incident' / ds.small_rec)}/*"], capture_output=True
        )
        run.seconds = time.perf_counter() - t0
        run.bytes = len(p.stdout)
        if p.returncode or run.bytes != want:
            raise RuntimeError(f"cat * on {system}: rc {p.returncode}, {run.bytes} of {want} B")

    return measure_mount(ctx, system, case, mop, before=list_root)


def case_grep_r(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    from bench.data import NEEDLE

    ds = ctx.ds
    if system == "curl":
        return _small_curl(ctx, case, ds.small_names)
    want = len(range(0, len(ds.small_names), 10))

    def mop(mp: Path, run: Run) -> None:
        t0 = time.perf_counter()
        p = subprocess.run(
            ["grep", "-rl", NEEDLE.decode(), str(mp / "incident" / ds.small_rec)],
            capture_output=True,
        )
        run.seconds = time.perf_counter() - t0
        found = p.stdout.count(b"\n")
        if p.returncode or found != want:
            raise RuntimeError(f"grep -r on {system}: rc {p.returncode}, {found} of {want} files")

    return measure_mount(ctx, system, case, mop, before=list_root)


def case_cat_one(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    ds = ctx.ds
    name = ds.small_names[rep % len(ds.small_names)]
    if system == "curl":
        list_url = (
            f"{ds.api.url}/api/now/attachment?sysparm_query=table_sys_id%3D{ds.small_rec}"
            f"&sysparm_limit=1000"
        )
        by_name = {a["file_name"]: a["sys_id"] for a in ds.api.list(f"table_sys_id={ds.small_rec}")}
        cmd = [*CURL, list_url, "--next", *CURL, "--compressed", ds.api.file_url(by_name[name])]

        def op(run: Run) -> None:
            run.seconds = util.timed(cmd, stdout=subprocess.DEVNULL)

        return measure_curl(ctx, case, op)

    def mop(mp: Path, run: Run) -> None:
        t0 = time.perf_counter()
        data = (mp / "incident" / ds.small_rec / name).read_bytes()
        run.seconds = time.perf_counter() - t0
        run.bytes = len(data)
        if len(data) != ctx.sizes["small_size"]:
            raise RuntimeError(f"cat one on {system}: {len(data)} bytes")

    return measure_mount(ctx, system, case, mop, before=list_root)


def case_ls_busy(ctx: Ctx, case: Case, system: str, rep: int) -> dict[str, Any]:
    """Does a listing wait behind bulk transfers? Eight downloads hold the connection (and on
    snfs, sessions); the `ls -l` of another record is timed alone."""
    ds, n = ctx.ds, ctx.sizes["par_n"]

    def mop(mp: Path, run: Run) -> None:
        files = [mp / "incident" / ds.par_rec / f"p{i}.bin" for i in range(n)]
        cats = [
            subprocess.Popen(["cat", str(f)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for f in files
        ]
        try:
            _until_reading(files)
            t0 = time.perf_counter()
            p = subprocess.run(["ls", "-l", str(mp / "problem" / ds.ls_rec)], capture_output=True)
            run.seconds = time.perf_counter() - t0
            lines = p.stdout.count(b"\n") - 1
            if p.returncode or lines != ctx.sizes["ls_n"]:
                raise RuntimeError(f"ls -l on {system}: rc {p.returncode}, {lines} entries")
            run.extra["downloads_done_before_ls"] = sum(c.poll() is not None for c in cats)
        finally:
            for c in cats:  # the downloads are not what is measured: stop them
                c.kill()
                c.wait()

    return measure_mount(ctx, system, case, mop, before=list_root)


def _until_reading(files: list[Path], limit: float = 10.0) -> None:
    """Until every file has been opened (its directory entry looked up) by its `cat`: a short
    poll, since the downloads themselves are what must be running when the `ls` starts."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not all(f.exists() for f in files):
        time.sleep(0.01)
    time.sleep(0.2)  # the downloads' first requests go out (a bench, not a test)
