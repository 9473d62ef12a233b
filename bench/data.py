"""Deterministic benchmark data, created once through the emulator's API and mirrored into the
local directory that `rclone serve webdav` serves (the same bytes under the same paths)."""

from __future__ import annotations

import hashlib
import random
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

MiB = 2**20
KiB = 2**10
AUTH = ("admin", "admin")
CHUNK = 4 * MiB


def sys_id(key: str) -> str:
    """A fixed 32-hex sys_id per key, so runs and reports are reproducible."""
    return hashlib.md5(f"snfs-bench:{key}".encode()).hexdigest()


def write_random(path: Path, size: int, seed: str) -> Path:
    """`size` pseudo-random (incompressible) bytes from a seeded generator."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size == size:
        return path
    rng = random.Random(seed)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(CHUNK, left)
            f.write(rng.randbytes(n))
            left -= n
    tmp.rename(path)
    return path


def small_bytes(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


NEEDLE = b"needle-in-the-record"


def text_bytes(seed: str, size: int, *, needle: bool) -> bytes:
    """`size` bytes of text lines (grep reads them as text); one line is NEEDLE if asked."""
    rng = random.Random(seed)
    words = [b"incident", b"server", b"restart", b"user", b"error", b"ticket", b"log", b"disk"]
    out = bytearray(NEEDLE + b"\n" if needle else b"")
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(10)) + b"\n"
    return bytes(out[:size])


class Api:
    """A thin synchronous client of the emulator for setup and request counts (thread-safe: one
    httpx client per thread, keep-alive)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    @property
    def http(self) -> httpx.Client:
        c = getattr(self._local, "client", None)
        if c is None:
            c = httpx.Client(auth=AUTH, timeout=300.0, headers={"Accept": "application/json"})
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()

    def _ok(self, r: httpx.Response) -> Any:
        if r.status_code >= 300:
            raise RuntimeError(
                f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}"
            )
        return r.json() if r.content else None

    def stats(self) -> dict:
        return self._ok(self.http.get(self.url + "/__emulator__/stats"))

    def reset_stats(self) -> None:
        self._ok(self.http.post(self.url + "/__emulator__/reset", json={}))

    def create_record(self, table: str, sid: str) -> None:
        r = self.http.get(f"{self.url}/api/now/table/{table}/{sid}")
        if r.status_code == 200:
            return
        self._ok(self.http.post(f"{self.url}/api/now/table/{table}", json={"sys_id": sid}))

    def upload_url(self, table: str, rec: str, name: str) -> str:
        return (
            f"{self.url}/api/now/attachment/file?table_name={table}&table_sys_id={rec}"
            f"&file_name={quote(name)}"
        )

    def upload(self, table: str, rec: str, name: str, content: bytes | Path) -> str:
        if isinstance(content, Path):
            size = content.stat().st_size

            def chunks(p: Path = content) -> Iterator[bytes]:
                with open(p, "rb") as f:
                    while block := f.read(CHUNK):
                        yield block

            body: Any = chunks()
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        else:
            body = content
            headers = {"Content-Type": "application/octet-stream"}
        r = self.http.post(self.upload_url(table, rec, name), content=body, headers=headers)
        return self._ok(r)["result"]["sys_id"]

    def list(self, query: str) -> list[dict]:
        out: list[dict] = []
        while True:
            r = self.http.get(
                f"{self.url}/api/now/attachment",
                params={"sysparm_query": query, "sysparm_limit": 10000, "sysparm_offset": len(out)},
            )
            rows = self._ok(r)["result"]
            out += rows
            if len(rows) < 10000:
                return out

    def delete(self, sid: str) -> None:
        r = self.http.delete(f"{self.url}/api/now/attachment/{sid}")
        if r.status_code not in (204, 404):
            self._ok(r)

    def delete_where(self, query: str) -> None:
        ids = [row["sys_id"] for row in self.list(query)]
        pmap(self.delete, ids)

    def file_url(self, sid: str) -> str:
        return f"{self.url}/api/now/attachment/{sid}/file"


def pmap(fn: Callable[..., Any], items: Iterable[Any], workers: int = 8) -> list[Any]:
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


class Dataset:
    """What the cases read: made once, on both the emulator and the rclone directory.

    Tables/records (sys_ids fixed by key):
      incident/big            big.bin                  (cold, warm, random reads)
      incident/par            p0.bin .. p7.bin         (parallel reads)
      incident/up             uploads land here (deleted after each run)
      problem/ls              f0000.txt .. (1,000)     (ls -l)
      sc_task/find-N          a0.txt .. a4.txt × 1,000 records  (find + stat)
      incident/small          s000.txt .. (small_n × small_size)  (cat *, grep -r, cat one)
      change_request/...      fresh records per run for cp -r and rm
    """

    def __init__(self, api: Api, root: Path, src: Path, sizes: dict[str, int]) -> None:
        self.api = api
        self.root = root  # served by rclone serve webdav
        self.src = src  # local sources of uploads and cp -r
        self.s = sizes
        self.ids: dict[str, str] = {}  # our name -> attachment sys_id on the emulator
        self._made: set[str] = set()
        self.dav: Any = None  # the rclone server, once it serves `root`

    def put_local(self, table: str, rec: str, name: str, data: bytes) -> None:
        if self.dav:
            self.dav.dav("PUT", f"{table}/{rec}/{name}", data)
        else:
            self.rpath(table, rec, name).write_bytes(data)

    def drop_local(self, table: str, rec: str, name: str = "") -> None:
        if self.dav:
            self.dav.dav("DELETE", f"{table}/{rec}/{name}" if name else f"{table}/{rec}/")
        elif name:
            self.rpath(table, rec, name).unlink(missing_ok=True)
        else:
            shutil.rmtree(self.rpath(table, rec), ignore_errors=True)

    def rpath(self, table: str, rec: str, name: str = "") -> Path:
        p = self.root / table / rec
        return p / name if name else p

    def _record(self, table: str, key: str) -> str:
        rec = sys_id(key)
        self.api.create_record(table, rec)
        if self.dav:
            self.dav.dav("MKCOL", f"{table}/")
            self.dav.dav("MKCOL", f"{table}/{rec}/")
        else:
            self.rpath(table, rec).mkdir(parents=True, exist_ok=True)
        return rec

    def _big_file(self, table: str, key: str, name: str, size: int, seed: str) -> str:
        rec = self._record(table, key)
        path = write_random(self.rpath(table, rec, name), size, seed)
        found = [
            a
            for a in self.api.list(f"table_sys_id={rec}^file_name={name}")
            if int(a["size_bytes"]) == size
        ]
        self.ids[name] = found[0]["sys_id"] if found else self.api.upload(table, rec, name, path)
        return rec

    def need(self, what: str) -> None:
        if what in self._made:
            return
        self._made.add(what)
        s = self.s
        if what == "big":
            self.big_rec = self._big_file("incident", "big", "big.bin", s["big"], "big")
        elif what == "par":
            for i in range(s["par_n"]):
                self.par_rec = self._big_file(
                    "incident", "par", f"p{i}.bin", s["par_size"], f"par{i}"
                )
        elif what == "up":
            self.up_rec = self._record("incident", "up")
            self.up_src = write_random(self.src / "upload.bin", s["upload"], "upload")
        elif what == "rss":
            self.rss_rec = self._record("incident", "rss")
            self.rss_src = write_random(self.src / "rss.bin", s["rss"], "rss")
        elif what == "ls":
            self.ls_rec = rec = self._record("problem", "ls")
            have = {a["file_name"] for a in self.api.list(f"table_sys_id={rec}")}
            todo = []
            for i in range(s["ls_n"]):
                name = f"f{i:04d}.txt"
                data = small_bytes(f"ls{i}", random.Random(f"lsz{i}").randint(100, 4096))
                (self.rpath("problem", rec, name)).write_bytes(data)
                if name not in have:
                    todo.append((name, data))
            pmap(lambda t: self.api.upload("problem", rec, t[0], t[1]), todo)
        elif what == "find":
            recs = [sys_id(f"find-{i}") for i in range(s["find_records"])]
            pmap(lambda r: self.api.create_record("sc_task", r), recs)
            have = {
                (a["table_sys_id"], a["file_name"]) for a in self.api.list("table_name=sc_task")
            }
            todo = []
            for i, rec in enumerate(recs):
                self.rpath("sc_task", rec).mkdir(parents=True, exist_ok=True)
                for j in range(s["find_per"]):
                    name = f"a{j}.txt"
                    data = small_bytes(
                        f"find{i}.{j}", random.Random(f"fz{i}.{j}").randint(100, 2048)
                    )
                    self.rpath("sc_task", rec, name).write_bytes(data)
                    if (rec, name) not in have:
                        todo.append((rec, name, data))
            pmap(lambda t: self.api.upload("sc_task", *t), todo, workers=12)
        elif what == "small":
            # A record of small text files; every 10th has a line with NEEDLE (for grep -r).
            self.small_rec = rec = self._record("incident", "small")
            have = {a["file_name"] for a in self.api.list(f"table_sys_id={rec}")}
            todo = []
            self.small_names = []
            for i in range(s["small_n"]):
                name = f"s{i:03d}.txt"
                data = text_bytes(f"small{i}", s["small_size"], needle=i % 10 == 0)
                self.rpath("incident", rec, name).write_bytes(data)
                self.small_names.append(name)
                if name not in have:
                    todo.append((name, data))
            pmap(lambda t: self.api.upload("incident", rec, t[0], t[1]), todo)
        elif what == "cpr":
            self.cpr_src = self.src / "cpr"
            rng = random.Random("cpr")
            self.cpr_files = []
            for i in range(s["cpr_n"]):
                name = f"file-{i:03d}.dat"
                size = s.get("cpr_size") or rng.randint(1 * KiB, 200 * KiB)
                p = self.cpr_src / name
                p.parent.mkdir(parents=True, exist_ok=True)
                if not (p.exists() and p.stat().st_size == size):
                    p.write_bytes(small_bytes(f"cpr{i}", size))
                self.cpr_files.append(p)
        else:
            raise KeyError(what)

    def fresh_record(self, table: str, key: str) -> str:
        """A new, empty record (emulator + rclone directory)."""
        return self._record(table, key)

    def cleanup_uploads(self) -> None:
        """Free the disk an upload run used (not timed)."""
        for rec_attr in ("up_rec", "rss_rec"):
            rec = getattr(self, rec_attr, None)
            if rec:
                self.api.delete_where(f"table_sys_id={rec}")
                d = self.rpath("incident", rec)
                for p in d.iterdir() if d.exists() else []:
                    if p.is_file():
                        self.drop_local("incident", rec, p.name)
