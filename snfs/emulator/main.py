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
    p.add_argument("--account", metavar="NAME", help="easyvista: the only account name accepted")
    p.add_argument(
        "--max-body",
        type=float,
        default=64.0,
        metavar="MB",
        help="easyvista: request body cap (413 above)",
    )
    p.add_argument(
        "--no-delete",
        action="store_true",
        help="easyvista: no DELETE of a document (the path is uncertain): 405",
    )
    p.add_argument(
        "--no-list",
        action="store_true",
        help="easyvista: no GET of a ticket's documents (not in the upload document): 405",
    )
    p.add_argument(
        "--no-download",
        action="store_true",
        help="easyvista: no GET of a document (not in the upload document): 405",
    )
    p.add_argument(
        "--no-ticket",
        action="store_true",
        help="easyvista: no GET of a ticket (not in the upload document): 405",
    )
    p.add_argument(
        "--any-body-form",
        action="store_true",
        help="easyvista: also take a JSON body and raw file parts (document 004: form-data)",
    )
    p.add_argument(
        "--delete-status",
        type=int,
        default=204,
        choices=(200, 204),
        help="easyvista: status of a successful DELETE",
    )
    p.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="huawei: an accepted X-Auth-Token (repeatable; default test-token)",
    )
    p.add_argument("--limit-size", type=float, default=4.0, metavar="MB", help="huawei: limit_size")
    p.add_argument("--limit-file-type", metavar="LIST", help="huawei: limit_file_type (comma list)")
    p.add_argument(
        "--limit-count",
        type=int,
        default=100,
        metavar="N",
        help="huawei: limit_count, stored accessories per accessoryFrom (0: none)",
    )
    p.add_argument(
        "--business-errors-200",
        action="store_true",
        help="huawei: answer limit/parameter errors with HTTP 200 + error_code",
    )
    p.add_argument(
        "--no-limits",
        action="store_true",
        help="huawei: no GET /accessorys/limits (not in the upload document): 404",
    )
    p.add_argument(
        "--not-found-status",
        type=int,
        default=404,
        choices=(400, 404),
        help="huawei: status for an unknown accessory_id",
    )
    return p.parse_args(argv)


KINDS = ("servicenow", "easyvista", "huawei")


def build_other(args: argparse.Namespace, data_dir: Path) -> tuple[Any, Any]:
    """(emulator, ASGI app) for --kind easyvista|huawei."""
    chunk = Config(**given(args, Config)).chunk_size  # --chunk-size, shared by every kind
    if args.kind == "easyvista":
        from snfs.emulator import easyvista as ev

        try:
            users = [ev.parse_ev_user(u) for u in args.user]
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        emu = ev.EasyVistaEmulator(
            ev.EVConfig(
                host=args.host,
                port=args.port,
                data_dir=data_dir,
                users=users,
                account=args.account,
                max_body_mb=args.max_body,
                delete=not args.no_delete,
                delete_status=args.delete_status,
                list_documents=not args.no_list,
                download=not args.no_download,
                ticket_get=not args.no_ticket,
                any_body_form=args.any_body_form,
                chunk_size=chunk,
            )
        )
        return emu, ev.build_app(emu)
    from snfs.emulator import huawei as hw

    config = hw.HWConfig(
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        tokens=args.token or ["test-token"],
        limit_size_mb=args.limit_size,
        limit_count=max(0, args.limit_count),
        business_errors_200=args.business_errors_200,
        not_found_status=args.not_found_status,
        chunk_size=chunk,
        limits_api=not args.no_limits,
    )
    if args.limit_file_type is not None:
        config.limit_file_type = args.limit_file_type
    hw_emu = hw.HuaweiEmulator(config)
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
