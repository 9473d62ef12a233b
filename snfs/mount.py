"""`snfs mount` and `snfs unmount`: wire the parts together and run the FUSE main loop."""

from __future__ import annotations

import argparse
import errno
import itertools
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from snfs import config, notify
from snfs.arguments import add_arguments, from_args
from snfs.attrs import Owner, Timeouts, effective_umask, umask_given
from snfs.backend import Backend, RemoteFile
from snfs.children import snfs_command
from snfs.content_cache import ContentCache
from snfs.control import Control
from snfs.credentials import spool_identity
from snfs.errors import ConfigError, SnfsError, unwrap
from snfs.fs import Operations
from snfs.index import open_index
from snfs.logs import open_log_file, prepare_log_file, setup_logging
from snfs.options import MountOptions, cache_home, state_home
from snfs.prefetch import Prefetcher
from snfs.progress import Transfers
from snfs.registry import make_backend, systems
from snfs.spool import Spool, instance_dir, shared_token_spool
from snfs.status import unescape_mount_field
from snfs.transfer import Sink
from snfs.tree import Tree
from snfs.unmount import SHUTDOWN_UPLOAD_SECONDS, unmount, unmount_report_path, write_unmount_report
from snfs.write_states import State
from snfs.writes import Writes

log = logging.getLogger("snfs")


def fsname(source: str) -> str:
    """The mount's source as `df`, `mount` and /proc/mounts show it: the instance. libfuse
    splits options at `,` and unescapes `\\`, so both are escaped."""
    return source.replace("\\", "\\\\").replace(",", "\\,")


def fuse_options(o: MountOptions, source: str = "snfs") -> set[str]:
    opts = set(pyfuse3.default_options) | {f"fsname={fsname(source)}", "subtype=snfs"}
    if o.read_only:
        opts.add("ro")
    if o.allow_other:
        opts.add("allow_other")
    opts.update(o.extra_fuse_options)
    return opts


def prepare_mountpoint(path: Path, *, allow_non_empty: bool = False) -> None:
    """Refuse a live mount, a missing directory and (unless allowed) one with files in it, whose
    files the mount would hide; clear a dead mount left by a crash ("Transport endpoint is not
    connected"). Checked first, before anything else can fail for a reason that is not the
    user's mistake."""
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
    if not allow_non_empty:
        with os.scandir(path) as entries:
            names = sorted(e.name for e in itertools.islice(entries, 4))
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise ConfigError(
                f"mount point {path} is not empty ({shown}): the mount would hide its files; "
                "use an empty directory, or give --allow-non-empty to mount over them"
            )


def fuse_init(ops: Operations, mountpoint: Path, options: set[str]) -> None:
    """`pyfuse3.init`, with libfuse's own complaint (it writes to fd 2, e.g. "fuse: unknown
    option(s): `-o bogus'") turned into one ConfigError instead of a RuntimeError traceback."""
    with tempfile.TemporaryFile() as said:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(said.fileno(), 2)
        try:
            pyfuse3.init(ops, str(mountpoint), options)
            failed: RuntimeError | None = None
        except RuntimeError as e:
            failed = e
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        said.seek(0)
        text = " ".join(said.read().decode(errors="replace").split())
    if failed is not None:
        raise ConfigError(
            f"cannot mount on {mountpoint}: FUSE refused: {text or failed} "
            "(snfs's own -o options: ro, rw, allow_other, uid=N, gid=N, umask=NNN; "
            "every other option is a long option: snfs mount --help)"
        )
    if text:
        log.warning("FUSE: %s", text)


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


class Mount:
    """Everything one mount owns, built inside the trio run."""

    def __init__(self, o: MountOptions, backend: Backend) -> None:
        self.o = o
        self.backend = backend
        # Spool and cache are per system and URL: file ids are unique only there.
        self.key = backend.instance_key
        self.started = time.time()
        self.transfers = Transfers()
        self.tree: Tree | None = None
        # Where the shutdown's list of unsent files goes, if `snfs unmount` asks for it.
        self.report = unmount_report_path(os.getpid())

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
            "writes": self.writes.footprint(),
            "transfers_in_flight": self.transfers.as_list(),
            "unmount_report": str(self.report),
        }

    def _known(self, file_id: str) -> tuple[RemoteFile | None, str]:
        """A file's metadata from the tree (for the backend to choose how to download it) and
        the path `snfs status` shows for its download."""
        att = self.tree.attachment(file_id) if self.tree is not None else None
        path = f"{att.table_name}/{att.table_sys_id}/{att.file_name}" if att else file_id
        return att, path

    def _download(self, sys_id: str, offset: int) -> AsyncIterator[bytes]:
        """The backend's download of a file, counted for `snfs status`."""
        att, path = self._known(sys_id)
        chunks = self.backend.stream(sys_id, offset=offset, like=att)
        return self.transfers.download(chunks, path, att.size_bytes if att else None, offset)

    async def _download_into(self, sys_id: str, offset: int, sink: Sink) -> None:
        """The backend's download of a file by a worker thread, counted for `snfs status`."""
        att, path = self._known(sys_id)
        with self.transfers.counting(sink, path, att.size_bytes if att else None, offset) as s:
            await self.backend.stream_into(sys_id, s, offset=offset, like=att)

    def unsent(self) -> list[dict[str, Any]]:
        """What is not on the instance (owed, blocked), each with why."""
        now = time.time()
        return [
            self.writes.describe(st, now)
            for st in self.writes.pending()
            if st.state is not State.STORED
        ]

    def _say_unsent(self) -> None:
        """At shutdown: one line per file the instance does not have, in the log and, when
        `snfs unmount` asked for it, in its report."""
        left = self.unsent()
        for f in left:
            if f["state"] == "local-only":  # desktop metadata: never sent, by design
                log.info("kept local only: %s (%s)", f["path"], f["last_error"])
                continue
            log.warning(
                "not sent: %s (%s: %s); kept in the spool, the next mount of this instance "
                "sends it",
                f["path"],
                f["state"],
                f["last_error"] or "not stored yet",
            )
        write_unmount_report(self.report, left)

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
                self._download,
                into=self._download_into,
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
        # The metadata index: per instance and user (what a listing shows depends on ACLs).
        index_dir = instance_dir(
            (o.cache_dir or cache_home()) / "index", self.key, spool_identity(o)
        )
        self.tree = tree = Tree(
            backend,
            dir_cache_time=o.dir_cache_time,
            tables=o.tables,
            pagers=max(1, o.max_in_flight - 2),  # two requests stay free for lookups
            index=None if o.no_index else await open_index(index_dir),
        )
        spool_base, owner = o.spool_dir or state_home() / "spool", spool_identity(o)
        spool = Spool(instance_dir(spool_base, self.key, owner), exclusive=not o.read_only)
        if owner.startswith("token:") and (old := shared_token_spool(spool_base, self.key)):
            log.warning(
                "%s still holds uploads owed by token mounts of an older snfs; they are not "
                'sent with this token (docs/RUNNING.md, "Spool")',
                old,
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
            uploads=self.transfers,
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
            Timeouts.for_listings(o.dir_cache_time),
            prefetch,
        )
        prepare_mountpoint(o.mountpoint, allow_non_empty=o.allow_non_empty)
        fuse_init(ops, o.mountpoint, fuse_options(o, backend.base_url))
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
                await tree.aclose()
            self._say_unsent()
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
    """Run the mount in a detached child; return once it is mounted (or failed). The child's
    stderr goes to the log too, so whatever stops it (even before logging is set up) is
    there, and a failure's reason is also printed here."""
    read_fd, write_fd = os.pipe()
    log_file = o.log_file or state_home() / "snfs.log"
    prepare_log_file(log_file)  # never chmods an existing directory; the file is 0600
    start = log_file.stat().st_size
    args = [a for a in argv if a != "--daemon"] + ["--ready-fd", str(write_fd)]
    if not o.log_file:
        args += ["--log-file", str(log_file)]
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # not a service's main
    with open_log_file(log_file) as err:
        child = subprocess.Popen(
            snfs_command("mount", *args),
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
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
    reason = failure_reason(log_file, start)
    print(
        f"snfs: mount failed (exit {code}){': ' + reason if reason else ''}; see {log_file}",
        file=sys.stderr,
    )
    return code or 1


def failure_reason(log_file: Path, start: int) -> str:
    """The last error the child wrote to its log after `start` (else its last line)."""
    try:
        with open(log_file, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if " ERROR " in line or line.startswith("ERROR")]
    last = (errors or lines or [""])[-1]
    # "2026-01-05 09:07:00,123 ERROR   snfs: message" -> "message"
    head, sep, message = last.partition(": ")
    return message if sep and ("ERROR" in head or "WARNING" in head) else last


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


def profile_hint(o: MountOptions) -> str:
    """When INSTANCE looked like a profile name but no profile has it: say so, since it was
    then taken as an instance name (`prodd` -> https://prodd.service-now.com)."""
    if o.profile is not None or not config.looks_like_profile_name(o.instance):
        return ""
    path = config.config_path()
    try:
        names = config.profile_names(path)
    except SnfsError:
        names = []
    known = f" (profiles: {', '.join(names)})" if names else ""
    where = f"in {path}" if path.exists() else f"({path} does not exist)"
    return f"; no profile {o.instance!r} {where}{known}, so it was taken as an instance name"


def main_mount(argv: list[str]) -> int:
    args, profile = config.apply_profile(parser(), argv)
    hint = ""
    try:
        o = from_args(args, profile)
        hint = profile_hint(o)
        setup_logging(o.verbose, o.log_file)
        o.umask, warning = effective_umask(o.allow_other, o.umask, umask_given(args.fuse_options))
        if warning and not o.daemon:  # a daemon's child says it once, in its log
            log.warning("%s", warning)
        # The mount point first: its problem is the user's to fix, whatever else fails.
        prepare_mountpoint(o.mountpoint, allow_non_empty=o.allow_non_empty)
        if o.daemon:
            return daemonize(argv, o)
        backend = make_backend(o)
    except SnfsError as e:
        print(f"snfs: {e.message}{hint}", file=sys.stderr)
        return 2
    try:
        code = trio.run(Mount(o, backend).run)
    except Exception as e:  # grouped by a nursery or not: one line for what snfs knows
        err = unwrap(e)
        if not isinstance(err, SnfsError):
            raise
        log.error("%s", err.message)
        return 1
    if code and hint:
        log.error("%s", hint.lstrip("; "))
    return code


main = main_mount
