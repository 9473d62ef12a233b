"""`mount.snfs`: the mount(8) external helper.

mount(8) runs `mount.snfs SOURCE DIR [-sfnv] [-N NS] [-o OPTIONS] [-t fuse.snfs]` for
`mount -t snfs` / `-t fuse.snfs` and for fstab lines of those types. This turns that into

    snfs mount SOURCE DIR --daemon [-o FUSE_OPTIONS] [--long-option VALUE ...]

so mount(8) returns once the file system is mounted, as it expects. SOURCE is passed as
is: an instance name, a URL or a config profile name.

In OPTIONS:
- options for mount(8) or systemd (`snfs.options.MOUNT8_ONLY`: `_netdev`, `auto`, `noauto`,
  `nofail`, `defaults`, the `user`/`users`/`owner`/`group` flags, `x-*`, `comment=`) are
  dropped, and so is `rw`: mount(8) adds it by default, and passing it on would override a
  profile's `ro`;
- `key=value` (or a bare `key` for a flag) where key names an option of the schema in
  `snfs.options`, with `_` or `-` (`dir_cache_time=30`, `allow_insecure_http`), becomes
  `--key value`. `tables=` takes `:` between tables (`tables=incident:problem`), since `,`
  separates options; `username=NAME` is an alias of `user=NAME`;
- secrets (`password=`, `token=`, ...) are refused: fstab and the process table are readable
  by everyone; use `password_file=`, `credential=` or the profile;
- everything else (`ro`, `allow_other`, `uid=`, `gid=`, `umask=`, other FUSE options) is
  passed on in `-o`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from snfs.arguments import all_options
from snfs.children import snfs_command
from snfs.option_schema import Kind
from snfs.options import mount8_only

__all__ = ["translate", "main", "UsageError"]

PROG = "mount.snfs"

_SECRETS = {"password", "passwd", "pass", "token", "client_secret", "oauth_secret", "secret"}


class UsageError(Exception):
    """Bad invocation of mount.snfs (exit status 1, as mount(8) expects)."""


@dataclass
class Invocation:
    source: str
    mountpoint: str
    options: list[str] = field(default_factory=list)  # as given, split at commas
    fake: bool = False  # -f: do everything but the mount
    verbose: int = 0  # -v
    sloppy: bool = False  # -s: accepted, nothing to do
    no_mtab: bool = False  # -n: accepted, snfs never writes mtab


def _long_options() -> dict[str, tuple[str, bool, Kind]]:
    """mount(8) name -> (long option, takes a value, kind), from the option schema: each
    option by its name, its long option's name (`read_ahead`) and its aliases."""
    out: dict[str, tuple[str, bool, Kind]] = {}
    for o in all_options():
        if not o.mount8 or o.fuse:
            continue
        entry = (o.long, not (o.kind.flag or o.kind.count), o.kind)
        for name in (o.name, o.long[2:].replace("-", "_"), *o.aliases):
            out[name] = entry
    return out


def parse(argv: list[str]) -> Invocation:
    """Split mount(8)'s helper arguments (options may come before or after the two
    positionals, and may be bundled: `-nvo ro`)."""
    positionals: list[str] = []
    options: list[str] = []
    inv = Invocation("", "")
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        j = 1
        while j < len(arg):
            flag = arg[j]
            j += 1
            if flag in "otN":
                value = arg[j:]
                if not value:
                    if i >= len(argv):
                        raise UsageError(f"option -{flag} needs a value")
                    value = argv[i]
                    i += 1
                if flag == "o":
                    options += [o.strip() for o in value.split(",") if o.strip()]
                elif flag == "t":
                    if value not in ("snfs", "fuse.snfs", "fuseblk.snfs"):
                        raise UsageError(f"file system type {value!r} is not snfs")
                else:
                    raise UsageError("-N (mount in another namespace) is not supported")
                break
            if flag == "f":
                inv.fake = True
            elif flag == "v":
                inv.verbose += 1
            elif flag == "s":
                inv.sloppy = True
            elif flag == "n":
                inv.no_mtab = True
            elif flag == "h":
                raise UsageError(f"usage: {PROG} SOURCE DIR [-sfnv] [-o OPTIONS]")
            else:
                raise UsageError(f"unknown flag -{flag}")
    if len(positionals) != 2:
        raise UsageError(
            f"usage: {PROG} SOURCE DIR [-sfnv] [-o OPTIONS] "
            f"(got {len(positionals)} arguments besides options)"
        )
    inv.source, inv.mountpoint = positionals
    inv.options = options
    return inv


def translate(argv: list[str]) -> list[str]:
    """mount.snfs arguments (without the program name) -> `snfs` arguments
    (`["mount", SOURCE, DIR, "--daemon", ...]`). Raises UsageError."""
    return _translate(parse(argv))


def _translate(inv: Invocation) -> list[str]:
    longs = _long_options()
    fuse: list[str] = []
    extra: list[str] = []
    for opt in inv.options:
        key, eq, value = opt.partition("=")
        dest = key.replace("-", "_")
        if dest.lower() in _SECRETS:
            raise UsageError(
                f"-o {key}=...: a secret never goes in mount options (fstab and "
                "the process list are readable by everyone); use "
                "password_file=, credential= or the config profile"
            )
        if mount8_only(opt) or opt == "rw":
            continue
        if dest in longs:
            flag, takes_value, kind = longs[dest]
            if takes_value:
                if not eq or not value:
                    raise UsageError(f"-o {key} needs a value ({key}=...)")
                extra += [flag, kind.from_mount8(value)]
            else:
                if eq and value.lower() not in ("1", "yes", "true", "y", "on"):
                    if value.lower() in ("0", "no", "false", "n", "off"):
                        continue
                    raise UsageError(f"-o {key} is a flag; it takes no value")
                extra.append(flag)
            continue
        fuse.append(opt)
    out = ["mount", inv.source, inv.mountpoint, "--daemon"]
    if fuse:
        out += ["-o", ",".join(fuse)]
    out += extra
    out += ["-v"] * inv.verbose
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        inv = parse(argv)
        args = _translate(inv)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    cmd = snfs_command(*args)
    if inv.verbose:
        print(f"{PROG}: running {' '.join(cmd)}", file=sys.stderr)
    if inv.fake:
        return 0
    os.execv(sys.executable, cmd)
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
