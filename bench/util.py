"""Small process and machine helpers for the benchmark: tools, ports, caches, /proc figures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

APT_TOOLS = {"curl": "curl", "rclone": "rclone", "nginx": "nginx"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def which(tool: str) -> str | None:
    return shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.access(p, os.X_OK)), None
    )


def ensure_tools(tools: list[str]) -> dict[str, str | None]:
    """Install Debian's packages for the missing tools when we are root; return their paths."""
    missing = [t for t in tools if not which(t)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        pkgs = sorted({APT_TOOLS[t] for t in missing})
        log(f"installing with apt-get: {' '.join(pkgs)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        # policy-rc.d-less containers: the nginx package may try to start a service; harmless.
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], env=env, check=False)
    return {t: which(t) for t in tools}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def stop_proc(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """Stop one process we started, by its pid: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def unmount(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", str(path)], capture_output=True)
    if os.path.ismount(path) or _dead(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def _dead(path: Path) -> bool:
    try:
        os.stat(path)
        return False
    except OSError:
        return True


def wait_mounted(
    path: Path, proc: subprocess.Popen, timeout: float = 30.0, log_file: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = (
                log_file.read_text(errors="replace")[-3000:]
                if log_file and log_file.exists()
                else ""
            )
            raise RuntimeError(f"mount process exited {proc.returncode}:\n{text}")
        if os.path.ismount(path):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{path} was not mounted after {timeout} s")


_DROP_STATE: dict[str, bool] = {}


def drop_caches() -> bool:
    """sync + drop the page cache, dentries and inodes; False where the sandbox refuses."""
    if _DROP_STATE.get("refused"):
        return False
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        _DROP_STATE["refused"] = True
        return False


def drop_caches_allowed() -> bool:
    return drop_caches()


def peak_rss(pid: int) -> int | None:
    """VmHWM of a live process, in bytes."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (its threads included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def run(
    cmd: list[str] | str, *, check: bool = True, timeout: float = 900.0, **kw
) -> subprocess.CompletedProcess:
    shell = isinstance(cmd, str)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(cmd, shell=shell, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(
            f"{cmd if shell else ' '.join(map(str, cmd))} exited {p.returncode}: "
            f"{(p.stderr or b'').decode(errors='replace')[-2000:]}"
        )
    return p


def timed(cmd: list[str] | str, **kw) -> float:
    """Wall seconds of one command (spawn included: a few ms, the same for every system)."""
    t0 = time.perf_counter()
    run(cmd, **kw)
    return time.perf_counter() - t0


def _proc_facts() -> dict[str, object]:
    """CPU model and memory size from /proc."""
    facts: dict[str, object] = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                facts["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    return facts


def machine_info() -> dict:
    info: dict = {
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
    try:
        info.update(_proc_facts())
    except OSError:
        pass
    try:
        with open("/etc/os-release") as f:
            info["os"] = next(
                line.split("=", 1)[1].strip().strip('"')
                for line in f
                if line.startswith("PRETTY_NAME=")
            )
    except (OSError, StopIteration):
        pass
    for tool, args in (("curl", ["--version"]), ("rclone", ["version"]), ("nginx", ["-v"])):
        path = which(tool)
        if path:
            p = subprocess.run([path, *args], capture_output=True, text=True)
            out = (p.stdout or p.stderr).strip().splitlines()
            info[tool] = out[0] if out else "?"
    try:
        import httpx
        import pyfuse3

        info["httpx"] = httpx.__version__
        info["pyfuse3"] = pyfuse3.__version__
    except Exception:
        pass
    return info
