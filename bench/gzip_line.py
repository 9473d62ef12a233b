"""`python -m bench.gzip_line`: where gzip on the wire pays for a download, and where not.

One emulator (gzip level 1, as `make bench` runs it) holds two files of the same size: text
lines (compressible, like logs) and random bytes (incompressible, like JPEG, zip, PDF). Each is
downloaded with `Accept-Encoding: gzip` and with `identity`, through `bench.latency_proxy` at
each link bandwidth asked for (`--mbit`, 0 = loopback speed), by the client snfs's download
workers use (httpx's synchronous client) with the SHA-256 they compute. Encodings alternate
within each repeat; each cell is the median. Reported: MiB/s of content, the bytes on the wire,
and the client's and the emulator's CPU seconds per GiB of content. Writes
bench/results/gzip-line.md.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import util
from bench.data import AUTH, Api, text_bytes
from bench.systems import Emulator, LatencyProxy

HERE = Path(__file__).resolve().parent
MiB, GiB = 2**20, 2**30


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _get(client: httpx.Client, url: str, enc: str) -> tuple[float, float, int, int]:
    """One download: seconds, client CPU seconds, content bytes, wire bytes."""
    t0, c0 = time.perf_counter(), _cpu()
    digest, n = hashlib.sha256(), 0
    with client.stream("GET", url, headers={"Accept-Encoding": enc}) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            digest.update(chunk)
            n += len(chunk)
        wire = r.num_bytes_downloaded
    return time.perf_counter() - t0, _cpu() - c0, n, wire


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gzip_line", description=__doc__)
    p.add_argument("--mbit", default="0,1000,200,50", help="comma list of link Mbit/s; 0 = none")
    p.add_argument("--size", type=int, default=16, help="MiB per file (default 16)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args(argv)
    links = [float(x) for x in a.mbit.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="snfs-gzip-line-", dir="/var/tmp"))
    emu = None
    rows: list[dict[str, Any]] = []
    try:
        emu = Emulator(work)
        api = Api(emu.url)
        rec = "f" * 32
        api.create_record("incident", rec)
        size = a.size * MiB
        files = {
            "text": api.upload(
                "incident", rec, "app.log", text_bytes("gzip-line", size, needle=False)
            ),
            "random": api.upload(
                "incident", rec, "photo.jpg", random.Random("gzip-line").randbytes(size)
            ),
        }
        for mbit in links:
            # Loopback: straight to the emulator; a link: through the proxy that makes it.
            proxy = LatencyProxy(emu.url, 0, work, f"gzip-{mbit:g}", mbit) if mbit else None
            base = proxy.url if proxy else emu.url
            try:
                with httpx.Client(auth=AUTH, timeout=600) as client:
                    for sid in files.values():  # warm: connection, server's page cache
                        _get(client, f"{base}/api/now/attachment/{sid}/file", "identity")
                    runs: dict[tuple[str, str], list[tuple[float, float, int, int, float]]] = {}
                    for rep in range(a.repeat):
                        order = ["gzip", "identity"] if rep % 2 == 0 else ["identity", "gzip"]
                        for kind, sid in files.items():
                            for enc in order:
                                e0 = util.cpu_seconds(emu.pid) or 0.0
                                url = f"{base}/api/now/attachment/{sid}/file"
                                got = _get(client, url, enc)
                                emu_cpu = (util.cpu_seconds(emu.pid) or 0.0) - e0
                                runs.setdefault((kind, enc), []).append((*got, emu_cpu))
                    for (kind, enc), rs in runs.items():
                        rows.append(
                            {
                                "mbit": mbit,
                                "content": kind,
                                "encoding": enc,
                                "mib_s": statistics.median(r[2] / MiB / r[0] for r in rs),
                                "wire_mib": statistics.median(r[3] for r in rs) / MiB,
                                "client_cpu_s_per_gib": statistics.median(
                                    r[1] / (r[2] / GiB) for r in rs
                                ),
                                "emulator_cpu_s_per_gib": statistics.median(
                                    r[4] / (r[2] / GiB) for r in rs
                                ),
                            }
                        )
                        util.log(f"{mbit:g} Mbit {kind} {enc}: {rows[-1]}")
            finally:
                if proxy is not None:
                    proxy.stop()
    finally:
        if emu is not None:
            emu.stop()
        shutil.rmtree(work, ignore_errors=True)
    md = _markdown(rows, a, size)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gzip-line.md").write_text(md)
    print(md)
    return 0


def _markdown(rows: list[dict[str, Any]], a: argparse.Namespace, size: int) -> str:
    lines = [
        f"# gzip or identity for a download — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"One {size // MiB} MiB file of each kind, straight from the emulator (loopback) or "
        "through `bench.latency_proxy` (no added delay; the link's bandwidth per row), "
        f"{a.repeat} runs each after a warm-up, encodings alternating; medians. "
        "Client: httpx's synchronous client + SHA-256 (what a download worker does).",
        "",
        "| link | content | encoding | MiB/s | MiB on the wire | client CPU s/GiB | "
        "emulator CPU s/GiB | gzip vs identity (time) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    by = {(r["mbit"], r["content"], r["encoding"]): r for r in rows}
    for r in rows:
        other = by.get((r["mbit"], r["content"], "identity"))
        vs = (
            f"{other['mib_s'] and r['mib_s'] / other['mib_s']:.2f}× faster"
            if r["encoding"] == "gzip" and other
            else ""
        )
        link = f"{r['mbit']:g} Mbit/s" if r["mbit"] else "loopback"
        lines.append(
            f"| {link} | {r['content']} | {r['encoding']} | {r['mib_s']:.1f} | "
            f"{r['wire_mib']:.1f} | {r['client_cpu_s_per_gib']:.2f} | "
            f"{r['emulator_cpu_s_per_gib']:.2f} | {vs} |"
        )
    m = util.machine_info()
    lines += [
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs; Python {m.get('python')}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
