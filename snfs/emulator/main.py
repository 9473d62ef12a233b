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
from snfs.emulator.state import PATCH_RELEASES, RELEASES, Config, Emulator


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="snfs emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--certfile", type=Path, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--keyfile", type=Path, help="the certificate's private key (PEM)")
    p.add_argument(
        "--data", type=Path, help="data directory (default: a temporary one, removed at exit)"
    )
    p.add_argument("--demo", action="store_true", help="seed the demo data set and users itil, hr")
    p.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD[:ROLE,ROLE]")
    p.add_argument("--oauth-client", action="append", default=[], metavar="ID:SECRET")
    p.add_argument("--client-credentials-user", default="admin")
    p.add_argument("--token-lifetime", type=int, default=1799, metavar="SECONDS")
    p.add_argument(
        "--max-size",
        type=float,
        default=1024.0,
        metavar="MB",
        help="com.glide.attachment.max_size (default 1024, as documented; 0: no limit)",
    )
    p.add_argument(
        "--no-by-name-fields",
        action="store_true",
        help="no created_by_name/updated_by_name in upload answers (releases before them)",
    )
    p.add_argument("--extensions", default="", metavar="LIST", help="glide.attachment.extensions")
    p.add_argument("--oversize-status", type=int, default=400)
    p.add_argument("--extension-status", type=int, default=400)
    p.add_argument("--unknown-table-upload-status", type=int, default=404, choices=(400, 404))
    p.add_argument("--unknown-path-status", type=int, default=400, choices=(400, 404))
    p.add_argument("--acl-denied-status", type=int, default=404, choices=(403, 404))
    p.add_argument("--invalid-query-returns-no-rows", action="store_true")
    p.add_argument("--state-delay", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--range", action="store_true", help="serve Range requests on /file")
    p.add_argument(
        "--release",
        choices=RELEASES,
        default="zurich",
        help="the instance's release: PATCH rename only from australia (default zurich: 405)",
    )
    p.add_argument("--no-rename", action="store_true", help="no PATCH /attachment/{sys_id}")
    real = p.add_argument_group("a real instance, not a kind one (docs/EMULATOR.md)")
    real.add_argument(
        "--session-concurrency",
        type=int,
        default=1,
        metavar="N",
        help="transactions at once per JSESSIONID session (default 1; 0: no session lock)",
    )
    real.add_argument(
        "--acl-after-limit",
        action="store_true",
        help="kind: apply ACLs before sysparm_limit (no short pages)",
    )
    real.add_argument(
        "--aggregate-roles",
        default="admin",
        metavar="ROLES",
        help="roles with read on sys_attachment for the Aggregate API (others: 403); '*': all",
    )
    real.add_argument("--quota", type=float, default=60.0, metavar="SECONDS")
    real.add_argument("--row-time", type=float, default=0.0, metavar="MS", help="per row listed")
    real.add_argument("--file-rate", type=int, default=0, metavar="BYTES_PER_S")
    real.add_argument("--latency", type=float, default=0.0, metavar="MS", help="per API request")
    real.add_argument("--hibernating", action="store_true", help="answer 200 with an HTML page")
    real.add_argument("--rate-limit", metavar="N/SECONDS", help="429 above N requests per user")
    real.add_argument("--mfa-user", action="append", default=[], metavar="NAME")
    real.add_argument(
        "--deny",
        action="append",
        default=[],
        metavar="USER:QUERY",
        help="attachments matching the encoded QUERY are unreadable to USER (repeatable)",
    )
    p.add_argument("--no-gzip", action="store_true", help="never gzip /file")
    p.add_argument("--gzip-level", type=int, default=1, choices=range(1, 10))
    p.add_argument("--chunk-size", type=int, default=1024 * 1024, metavar="BYTES")
    p.add_argument("--attachment-default-limit", type=int, default=1000)
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
    chunk = max(4096, args.chunk_size)
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


def parse_rate_limit(spec: str | None) -> tuple[int, float] | None:
    if not spec:
        return None
    n, _, per = spec.partition("/")
    try:
        return max(1, int(n)), float(per or 3600)
    except ValueError:
        raise SystemExit(f"bad --rate-limit {spec!r}: expected N/SECONDS") from None


def parse_deny(spec: str) -> tuple[str, str]:
    user, sep, query = spec.partition(":")
    if not sep or not user or not query:
        raise SystemExit(f"bad --deny {spec!r}: expected USER:ENCODED_QUERY")
    return user, query


def build_config(args: argparse.Namespace, data_dir: Path) -> Config:
    clients = {"snfs": "snfs-secret"}
    for spec in args.oauth_client:
        cid, sep, secret = spec.partition(":")
        if not sep or not cid:
            raise SystemExit(f"bad --oauth-client {spec!r}: expected ID:SECRET")
        clients[cid] = secret
    return Config(
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        demo=args.demo,
        users=[parse_user(u) for u in args.user],
        oauth_clients=clients,
        max_size_mb=args.max_size if args.max_size > 0 else None,
        by_name_fields=not args.no_by_name_fields,
        extensions=frozenset(
            e.strip().lstrip(".").lower() for e in args.extensions.split(",") if e.strip()
        ),
        range=args.range,
        rename=args.release in PATCH_RELEASES and not args.no_rename,
        release=args.release,
        session_concurrency=max(0, args.session_concurrency),
        limit_before_acl=not args.acl_after_limit,
        aggregate_roles=frozenset(r.strip() for r in args.aggregate_roles.split(",") if r.strip()),
        quota=max(0.1, args.quota),
        row_time=max(0.0, args.row_time) / 1000,
        file_rate=max(0, args.file_rate),
        latency=max(0.0, args.latency) / 1000,
        hibernating=args.hibernating,
        rate_limit=parse_rate_limit(args.rate_limit),
        mfa_users=frozenset(args.mfa_user),
        deny=tuple(parse_deny(d) for d in args.deny),
        gzip=not args.no_gzip,
        gzip_level=args.gzip_level,
        chunk_size=max(4096, args.chunk_size),
        state_delay=max(0.0, args.state_delay),
        token_lifetime=args.token_lifetime,
        client_credentials_user=args.client_credentials_user,
        oversize_status=args.oversize_status,
        extension_status=args.extension_status,
        unknown_table_upload_status=args.unknown_table_upload_status,
        unknown_path_status=args.unknown_path_status,
        acl_denied_status=args.acl_denied_status,
        invalid_query_returns_no_rows=args.invalid_query_returns_no_rows,
        attachment_default_limit=args.attachment_default_limit,
    )


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
