"""The systems under test, all on loopback: the emulator (what snfs and curl talk to), an snfs
mount of it, `rclone serve webdav` of a local directory with the same files and an `rclone mount`
of that, and nginx serving one file statically (to check that the emulator is not the limit)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from bench import util
from snfs.children import snfs_command
from snfs.emulator.launch import launch

REPO = Path(__file__).resolve().parent.parent


class Emulator:
    def __init__(self, work: Path, *args: str) -> None:
        self.proc_handle = launch(
            work / "emulator-data",
            "--state-delay",
            "0",
            *args,
            log=work / "emulator.log",
            timeout=60,
        )
        self.url = self.proc_handle.url
        self.pid = self.proc_handle.proc.pid

    def stop(self) -> None:
        self.proc_handle.stop()


class SnfsMount:
    """A fresh `snfs mount` per run: its own mount point, content cache and spool."""

    def __init__(
        self,
        url: str,
        work: Path,
        extra: list[str] | None = None,
        *,
        name: str = "snfs",
        source: Path = REPO,
    ) -> None:
        """`source`: the checkout whose `snfs` runs (put first on the child's path): this one,
        or a baseline's (`--baseline`)."""
        self.url = url
        self.work = work
        self.extra = extra or []
        self.name, self.source = name, source
        self.n = 0
        self.proc: subprocess.Popen | None = None
        self.mp: Path | None = None
        self.pid: int | None = None

    def mount(self, *, again: bool = False) -> Path:
        """`again`: remount on the last run's directory (its cache and metadata index kept,
        as a user's remount finds them); it must have been unmounted with `keep=True`."""
        if not again:
            self.n += 1
        run = self.work / f"{self.name}-{self.n}"
        if not again:
            shutil.rmtree(run, ignore_errors=True)
        mp, state = run / "mnt", run / "state"
        mp.mkdir(parents=True, exist_ok=again)
        state.mkdir(exist_ok=again)
        log_file = run / "mount.log"
        cmd = [
            *snfs_command("mount"),
            self.url,
            str(mp),
            "--user",
            "admin",
            "--spool-dir",
            str(state / "spool"),
            "--cache-dir",
            str(state / "cache"),
            *self.extra,
        ]
        # The package of `source` (this checkout or a baseline's), named explicitly: the
        # child runs with `-P`, so its working directory is never on its path.
        env = dict(
            os.environ,
            SNFS_PASSWORD="admin",
            XDG_STATE_HOME=str(state),
            XDG_CACHE_HOME=str(state),
            PYTHONPATH=str(self.source),
        )
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(log_file, "ab"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.source,
        )
        self.mp, self.run_dir, self.log_file = mp, run, log_file
        util.wait_mounted(mp, self.proc, log_file=log_file)
        status = json.loads((mp / ".snfs" / "status").read_text())
        self.pid = int(status["pid"])
        return mp

    def status(self) -> dict:
        assert self.mp is not None
        return json.loads((self.mp / ".snfs" / "status").read_text())

    def unmount(self, *, keep: bool = False) -> None:
        if self.mp is None:
            return
        util.unmount(self.mp)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=60)  # a clean unmount finishes owed uploads first
            except subprocess.TimeoutExpired:
                util.stop_proc(self.proc)
        util.unmount(self.mp)
        _keep_log(self.log_file, self.work / "logs" / f"{self.name}-{self.n}.log")
        if not keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.mp = self.proc = self.pid = None


def baseline_checkout(ref: str, work: Path) -> Path:
    """The tree of git `ref` of this repository, exported into `work` (for `--baseline`)."""
    dest = work / "baseline"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "snfs"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _keep_log(src: Path, dst: Path) -> None:
    try:
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
    except OSError:
        pass


class RcloneServer:
    """`rclone serve webdav DIR` on a free loopback port (a Go HTTP server of the same files)."""

    def __init__(self, root: Path, work: Path) -> None:
        self.port = util.free_port()
        self.conf = work / "rclone.conf"
        self.conf.write_text("")
        self.proc = subprocess.Popen(
            [
                "rclone",
                "--config",
                str(self.conf),
                "serve",
                "webdav",
                str(root),
                "--addr",
                f"127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(work / "rclone-serve.log", "ab"),  # noqa: SIM115 - the child keeps it
            stdin=subprocess.DEVNULL,
        )
        util.wait_port(self.port, proc=self.proc)
        self.url = f"http://127.0.0.1:{self.port}"
        self._http = httpx.Client(timeout=300.0)

    def dav(self, method: str, rel: str, content: bytes | None = None) -> None:
        """Change the served directory through the server (it caches listings like any rclone
        VFS, so the benchmark never changes the directory behind its back once it runs)."""
        r = self._http.request(method, f"{self.url}/{quote(rel)}", content=content)
        if (
            r.status_code >= 300
            and not (method == "DELETE" and r.status_code == 404)
            and not (method == "MKCOL" and r.status_code == 405)
        ):  # 405: it exists
            raise RuntimeError(f"{method} {rel} on rclone serve webdav -> {r.status_code}")

    def stop(self) -> None:
        self._http.close()
        util.stop_proc(self.proc)


class LatencyProxy:
    """bench.latency_proxy in front of one server: every request waits `delay_ms` first."""

    def __init__(
        self, upstream: str, delay_ms: float, work: Path, name: str, mbit: float | None = None
    ) -> None:
        self.port = util.free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.latency_proxy",
                upstream,
                "--delay-ms",
                str(delay_ms),
                "--port",
                str(self.port),
                *(["--mbit", str(mbit)] if mbit else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(work / f"latency-proxy-{name}.log", "ab"),  # noqa: SIM115 - the child keeps it
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        util.wait_port(self.port, proc=self.proc)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        util.stop_proc(self.proc)


class RcloneMount:
    """A fresh `rclone mount --vfs-cache-mode writes` of the webdav server per run."""

    name = "rclone"

    def __init__(self, server: RcloneServer, work: Path, url: str | None = None) -> None:
        self.server = server
        self.url = url or server.url  # the server, or a latency proxy in front of it
        self.work = work
        self.n = 0
        self.proc: subprocess.Popen | None = None
        self.mp: Path | None = None
        self.pid: int | None = None

    def mount(self) -> Path:
        self.n += 1
        run = self.work / f"rclone-{self.n}"
        shutil.rmtree(run, ignore_errors=True)
        mp = run / "mnt"
        mp.mkdir(parents=True)
        self.rc_port = util.free_port()
        log_file = run / "mount.log"
        cmd = [
            "rclone",
            "--config",
            str(self.server.conf),
            "mount",
            ":webdav:",
            str(mp),
            "--webdav-url",
            self.url,
            "--vfs-cache-mode",
            "writes",
            "--cache-dir",
            str(run / "cache"),
            "--vfs-write-back",
            "0s",
            "--rc",
            "--rc-addr",
            f"127.0.0.1:{self.rc_port}",
            "--rc-no-auth",
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(log_file, "ab"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.mp, self.run_dir = mp, run
        util.wait_mounted(mp, self.proc, log_file=log_file)
        self.pid = self.proc.pid
        return mp

    def wait_uploads(self, expect: list[tuple[Path, int]], timeout: float = 600.0) -> None:
        """rclone uploads after close (write-back): wait until every expected file is on the
        server's disk at its full size and its VFS has nothing queued or in progress."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_size(p) == n for p, n in expect):
                p = subprocess.run(
                    [
                        "rclone",
                        "--config",
                        str(self.server.conf),
                        "rc",
                        "vfs/stats",
                        "--url",
                        f"http://127.0.0.1:{self.rc_port}/",
                    ],
                    capture_output=True,
                    text=True,
                )
                if p.returncode == 0:
                    disk = json.loads(p.stdout).get("diskCache", {})
                    if disk.get("uploadsInProgress", 0) == 0 and disk.get("uploadsQueued", 0) == 0:
                        return
            time.sleep(0.01)
        raise RuntimeError("rclone uploads did not finish")

    def unmount(self, *, keep: bool = False) -> None:
        if self.mp is None:
            return
        util.unmount(self.mp)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                util.stop_proc(self.proc)
        util.unmount(self.mp)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.mp = self.proc = self.pid = None


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size
    except OSError:
        return None


class Nginx:
    """Debian's nginx in the foreground with a minimal config, serving DIR on a free port."""

    def __init__(self, root: Path, work: Path) -> None:
        self.port = util.free_port()
        d = work / "nginx"
        d.mkdir(parents=True, exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / sub).mkdir(exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  types {{ }}
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{self.port};
    root {root};
  }}
}}
""")
        self.proc = subprocess.Popen(
            [util.which("nginx") or "nginx", "-c", str(conf), "-p", str(d)],
            stdout=subprocess.DEVNULL,
            stderr=open(d / "stderr.log", "ab"),  # noqa: SIM115 - the child keeps it
            stdin=subprocess.DEVNULL,
        )
        util.wait_port(self.port, proc=self.proc)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        util.stop_proc(self.proc)
