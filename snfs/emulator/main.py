"""`snfs emulator`: a ServiceNow Attachment API emulator on Starlette + Hypercorn (trio worker).

`--kind easyvista|huawei` serves EasyVista's or Huawei Cloud OSM's attachment API instead.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from snfs.emulator import easyvista as ev
from snfs.emulator import huawei as hw
from snfs.emulator.app import build_app
from snfs.emulator.auth import parse_user
from snfs.emulator.launch import announce
from snfs.emulator.state import PATCH_RELEASES, Config, Emulator
from snfs.emulator.switches import add_switches, given


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="snfs emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--certfile", type=Path, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--keyfile", type=Path, help="the certificate's private key (PEM)")
    p.add_argument(
        "--data", type=Path, help="data directory (default: a temporary one, removed at exit)"
    )
    p.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD[:ROLE,ROLE]")
    p.add_argument("--no-rename", action="store_true", help="no PATCH /attachment/{sys_id}")
    add_switches(p, Config)  # ServiceNow's switches, declared once in emulator.state.Config
    # --kind easyvista|huawei: other systems' attachment APIs (docs/EMULATOR.md); the switches
    # above are ServiceNow's, except --host, --port, --data and --user.
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="servicenow",
        help="which system to emulate (default servicenow)",
    )
    add_switches(p, ev.EVConfig)
    add_switches(p, hw.HWConfig)
    return p.parse_args(argv)


KINDS = ("servicenow", "easyvista", "huawei")


def build_other(args: argparse.Namespace, data_dir: Path) -> tuple[Any, Any]:
    """(emulator, ASGI app) for --kind easyvista|huawei."""
    chunk = Config(**given(args, Config)).chunk_size  # --chunk-size, shared by every kind
    if args.kind == "easyvista":
        try:
            users = [ev.parse_ev_user(u) for u in args.user]
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        config = ev.EVConfig(
            host=args.host,
            port=args.port,
            data_dir=data_dir,
            users=users,
            chunk_size=chunk,
            **given(args, ev.EVConfig),
        )
        emu = ev.EasyVistaEmulator(config)
        return emu, ev.build_app(emu)
    hw_config = hw.HWConfig(
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        chunk_size=chunk,
        **given(args, hw.HWConfig),
    )
    hw_emu = hw.HuaweiEmulator(hw_config)
    return hw_emu, hw.build_app(hw_emu)


def build_config(args: argparse.Namespace, data_dir: Path) -> Config:
    config = Config(
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        users=[parse_user(u) for u in args.user],
        **given(args, Config),
    )
    config.rename = config.release in PATCH_RELEASES and not args.no_rename
    return config


async def run(emu: Any, app: Any = None, tls: tuple[Path, Path] | None = None) -> None:
    hc = HypercornConfig()
    if tls is not None:
        hc.certfile, hc.keyfile = str(tls[0]), str(tls[1])
    host = emu.config.host
    hc.bind = [f"[{host}]:{emu.config.port}" if ":" in host else f"{host}:{emu.config.port}"]
    hc.graceful_timeout = 1.0
    hc.keep_alive_timeout = 75.0
    hc.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_signal, stop)
        binds = await nursery.start(
            lambda task_status: serve(
                app if app is not None else build_app(emu),
                hc,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        )
        announce(binds[0])


async def wait_for_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()
            return


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        raise SystemExit("snfs emulator: --certfile and --keyfile go together")
    tls = (args.certfile, args.keyfile) if args.certfile else None
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    temp = None if args.data else Path(tempfile.mkdtemp(prefix="snfs-emulator-"))
    data_dir = args.data or temp
    assert data_dir is not None
    try:
        app = None
        if args.kind == "servicenow":
            emu = Emulator(build_config(args, data_dir))
        else:
            emu, app = build_other(args, data_dir)
        try:
            trio.run(run, emu, app, tls)
        finally:
            emu.store.close()
    except KeyboardInterrupt:
        pass
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
