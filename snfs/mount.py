"""`snfs mount` and `snfs unmount`: wire the parts together and run the FUSE main loop."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from snfs import config, notify
from snfs.attrs import Owner, Timeouts, effective_umask, umask_given
from snfs.backend import Backend
from snfs.content_cache import ContentCache
from snfs.control import Control
from snfs.errors import ConfigError, SnfsError
from snfs.fs import Operations
from snfs.logs import prepare_log_file, setup_logging
from snfs.options import MountOptions, add_arguments, cache_home, from_args, state_home
from snfs.prefetch import Prefetcher
from snfs.registry import make_backend, systems
from snfs.spool import Spool, instance_dir
from snfs.status import unescape_mount_field
from snfs.tree import Tree
from snfs.writes import Writes

log = logging.getLogger("snfs")

SHUTDOWN_UPLOAD_SECONDS = 30.0


def fuse_options(o: MountOptions) -> set[str]:
    opts = set(pyfuse3.default_options) | {"fsname=snfs", "subtype=snfs"}
    if o.read_only:
        opts.add("ro")
    if o.allow_other:
        opts.add("allow_other")
    opts.update(o.extra_fuse_options)
    return opts


def prepare_mountpoint(path: Path) -> None:
    """Refuse a live mount; clear a dead one left by a crash ("Transport endpoint is not
    connected")."""
    try:
        os.statvfs(path)  # unlike stat, never answered from the kernel's attribute cache
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise ConfigError(f"mount point {path}: {e.strerror}") from None
        log.warning("mount point %s holds a dead snfs mount (crashed daemon); unmounting it", path)
        unmount(path, lazy=True)
        os.statvfs(path)
    if os.path.ismount(path):
        raise ConfigError(f"{path} is already a mount point; unmount it first")
    if not path.is_dir():
        raise ConfigError(f"mount point {path} is not a directory")


def set_read_ahead(mountpoint: Path, kb: int) -> None:
    """Let the kernel read ahead `kb` KiB on this mount: larger, fewer FUSE reads for sequential
    readers. Best effort (it needs root); never stat()s the mount, whose loop is not running yet."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split()
                if unescape_mount_field(fields[4]) == str(mountpoint):
                    bdi = fields[2].decode()
                    with open(f"/sys/class/bdi/{bdi}/read_ahead_kb", "w") as ra:
                        ra.write(str(kb))
                    return
    except OSError as e:
        log.debug("read-ahead left at the kernel's default: %s", e)


def unmount(path: Path, *, lazy: bool = False) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = (
        [tool, "-u"] + (["-z"] if lazy else []) + [str(path)]
        if tool
        else ["umount"] + (["-l"] if lazy else []) + [str(path)]
    )
    subprocess.run(cmd, check=True, capture_output=True)


def spool_user(o: MountOptions) -> str:
    """Whose rights owed uploads are sent with: the spool is kept per instance and user, so a
    pending upload is never resumed under another user's credentials. Bearer tokens name no
    user: token mounts of one instance share a spool (give each its own --spool-dir)."""
    if o.user:
        return f"user:{o.user}"
    if o.oauth_client_id:
        return f"oauth:{o.oauth_client_id}"
    return "token"


class Mount:
    """Everything one mount owns, built inside the trio run."""

    def __init__(self, o: MountOptions, backend: Backend) -> None:
        self.o = o
        self.backend = backend
        # Spool and cache are per system and URL: file ids are unique only there.
        self.key = backend.instance_key
        self.started = time.time()

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "instance": self.backend.base_url,
            "backend": self.backend.name,
            "mountpoint": str(self.o.mountpoint),
            "pid": os.getpid(),
            "uptime_seconds": round(now - self.started),
            "read_only": self.o.read_only,
            "write_back": self.o.write_back,
            "transfers": self.o.transfers,
            "requests": self.backend.stats.as_dict(),
            "cache": self.cache.stats(),
            "pending_uploads": [self.writes.describe(st, now) for st in self.writes.pending()],
        }

    async def sync(self) -> dict[str, Any]:
        """What `/.snfs/sync` answers once nothing is in flight (`snfs sync`)."""
        left = await self.writes.sync()
        now = time.time()
        return {
            "synced": not left,
            "pending_uploads": [self.writes.describe(st, now) for st in left],
            "local_only": [self.writes.describe(st, now) for st in self.writes.kept_local()],
        }

    async def run(self) -> int:
        o, backend = self.o, self.backend
        try:
            try:
                await backend.check()
            except SnfsError as e:
                log.error("cannot use %s: %s", backend.base_url, e.message)
                return 1
            # One cache per instance: sys_ids are unique only within an instance (and clones).
            disk_dir = instance_dir(o.cache_dir or cache_home() / "content", self.key)
            async with ContentCache(
                lambda sid, off: backend.stream(sid, offset=off),
                memory_bytes=o.cache_size,
                disk_dir=disk_dir,
                disk_bytes=o.disk_cache_size,
                range_reads=lambda: backend.supports_range,
            ) as cache:
                self.cache = cache
                return await self._serve(cache)
        finally:
            with trio.CancelScope(shield=True):
                await backend.aclose()

    async def _serve(self, cache: ContentCache) -> int:
        o, backend = self.o, self.backend
        tree = Tree(
            backend,
            dir_cache_time=o.dir_cache_time,
            tables=o.tables,
            pagers=max(1, o.max_in_flight - 2),  # two requests stay free for lookups
        )
        spool = Spool(
            instance_dir(o.spool_dir or state_home() / "spool", self.key, spool_user(o)),
            exclusive=not o.read_only,
        )
        self.writes = writes = Writes(
            tree,
            backend,
            cache,
            spool,
            read_only=o.read_only,
            write_back=o.write_back,
            transfers=o.transfers,
            alert=notify.desktop,
            local_only=o.local_only,
        )
        control = Control(tree.inodes, self.status, sync=self.sync)
        self.prefetch = prefetch = Prefetcher(
            cache, lambda f: self._siblings(tree, f), depth=o.prefetch
        )
        ops = Operations(
            tree,
            cache,
            writes,
            control,
            Owner(o.uid, o.gid, o.umask, o.read_only),
            Timeouts(entry=min(o.dir_cache_time, 60.0)),
            prefetch,
        )
        prepare_mountpoint(o.mountpoint)
        pyfuse3.init(ops, str(o.mountpoint), fuse_options(o))
        log.info(
            "mounted %s on %s%s",
            backend.base_url,
            o.mountpoint,
            " (read-only)" if o.read_only else "",
        )
        try:
            notify_ready(o.ready_fd)
            notify.ready(f"mounted {backend.base_url} on {o.mountpoint}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, tree, nursery.cancel_scope)
                nursery.start_soon(self._tune_read_ahead, ops)
                nursery.start_soon(prefetch.run)
                tree.warm_tables()  # in the background: paths below listed tables need no check
                if not o.read_only:
                    nursery.start_soon(self._recover_then_retry, writes)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            notify.stopping("unmounting")
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", o.mountpoint)
            # Unmounted first, so nobody waits on a frozen mount while the last uploads run;
            # what does not finish stays journaled for the next mount.
            owed = len(writes.pending())
            if owed:
                notify.status(f"unmounted; finishing {owed} pending upload(s)")
            with trio.CancelScope(shield=True):
                await writes.finish(SHUTDOWN_UPLOAD_SECONDS)
        return 0

    @staticmethod
    async def _siblings(tree: Tree, f: Any) -> list[Any]:
        """The files of `f`'s record in listing (readdir) order, from the cached listing."""
        listing = await tree.record_listing(f.table_name, f.table_sys_id)
        return [att for _name, att in sorted(listing.items())]

    async def _tune_read_ahead(self, ops: Operations) -> None:
        # The kernel sets the mount's read-ahead from the FUSE INIT reply (128 KiB, which
        # pyfuse3 does not let us change), so raise it just after that reply went out.
        await ops.initialized.wait()
        for delay in (0.05, 1.0):
            await trio.sleep(delay)
            set_read_ahead(self.o.mountpoint, self.o.read_ahead_kb)

    async def _recover_then_retry(self, writes: Writes) -> None:
        try:
            await writes.recover()
        except (SnfsError, OSError) as e:
            log.error("spool recovery incomplete (will retry in the background): %s", e)
        except Exception:  # a background task must never end the mount
            log.exception("spool recovery failed unexpectedly; owed uploads stay in the spool")
        await writes.run_retries()

    async def _signals(self, tree: Tree, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    notify.reloading()
                    tree.invalidate()
                    log.info("SIGHUP: cached listings dropped")
                    notify.ready(f"mounted {self.backend.base_url} on {self.o.mountpoint}")
                else:
                    log.info("%s: unmounting", signal.Signals(signum).name)
                    pyfuse3.terminate()
                    return


def notify_ready(fd: int | None) -> None:
    """Tell a waiting `snfs mount --daemon` parent that the mount is up."""
    if fd is None:
        return
    try:
        os.write(fd, b"ready\n")
    finally:
        os.close(fd)


def daemonize(argv: list[str], o: MountOptions) -> int:
    """Run the mount in a detached child; return once it is mounted (or failed)."""
    read_fd, write_fd = os.pipe()
    log_file = o.log_file or state_home() / "snfs.log"
    prepare_log_file(log_file)  # never chmods an existing directory; the file is 0600
    args = [a for a in argv if a != "--daemon"] + ["--ready-fd", str(write_fd)]
    if not o.log_file:
        args += ["--log-file", str(log_file)]
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # not a service's main
    child = subprocess.Popen(
        [sys.executable, "-m", "snfs", "mount", *args],
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        ready = pipe.read() == b"ready\n"
    if ready:
        print(f"snfs: mounted on {o.mountpoint} (pid {child.pid}, log {log_file})")
        return 0
    code = child.wait()
    print(f"snfs: mount failed (exit {code}); see {log_file}", file=sys.stderr)
    return code or 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="snfs mount",
        description="Mount a system's attachments as /<table>/<record>/<file_name>.",
        epilog="systems (--backend NAME, or INSTANCE as NAME+https://...):\n"
        + "\n".join(f"  {s.name:<11} {s.url}: {s.summary}" for s in systems()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def main_mount(argv: list[str]) -> int:
    args, profile = config.apply_profile(parser(), argv)
    try:
        o = from_args(args, profile)
        setup_logging(o.verbose, o.log_file)
        o.umask, warning = effective_umask(o.allow_other, o.umask, umask_given(args.fuse_options))
        if warning and not o.daemon:  # a daemon's child says it once, in its log
            log.warning("%s", warning)
        if o.daemon:
            return daemonize(argv, o)
        backend = make_backend(o)
    except SnfsError as e:
        print(f"snfs: {e.message}", file=sys.stderr)
        return 2
    try:
        return trio.run(Mount(o, backend).run)
    except SnfsError as e:
        log.error("%s", e.message)
        return 1


def main_unmount(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="snfs unmount")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("-z", "--lazy", action="store_true", help="detach even if busy")
    a = p.parse_args(argv)
    try:
        unmount(a.mountpoint, lazy=a.lazy)
    except subprocess.CalledProcessError as e:
        print(f"snfs: cannot unmount {a.mountpoint}: {e.stderr.decode().strip()}", file=sys.stderr)
        return 1
    return 0


main = main_mount
