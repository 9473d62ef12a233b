"""`snfs` command line: dispatches each subcommand to the module that owns it."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help). Modules are imported lazily so `snfs emulator`
# never loads FUSE code and `snfs mount` never loads the emulator.
COMMANDS: dict[str, tuple[str, str]] = {
    "emulator": ("snfs.emulator.main", "run the ServiceNow Attachment API emulator"),
    "mount": ("snfs.mount", "mount an instance"),
    "demo": ("snfs.demo", "start the emulator with demo data and mount it"),
    "unmount": ("snfs.unmount", "unmount a mount point; name each file not sent"),
    "status": ("snfs.status", "show a mount's status"),
    "sync": ("snfs.sync", "wait until a mount's closed files are stored (write-back)"),
}


def usage() -> str:
    lines = ["usage: snfs COMMAND [options]  |  snfs --version", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        from snfs import __version__

        print(f"snfs {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"snfs: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as e:
        if name != "emulator":
            raise
        print(f"snfs emulator: {e.name} is missing: pip install 'snfs[emulator]'", file=sys.stderr)
        return 2
    entry = getattr(module, f"main_{name}", None) or module.main
    return int(entry(rest) or 0)
