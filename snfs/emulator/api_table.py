"""Table API (enough for records to exist) and Aggregate API (/stats/{table}, also on
sys_attachment)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from snfs.emulator.auth import User
from snfs.emulator.common import (
    ACL_DENIED,
    ApiError,
    acl_denied,
    api_prefix,
    base_url,
    emu_of,
    list_headers,
    name_value_filters,
    not_found,
    paging,
    quota_exceeded,
    render,
    require_user,
    spend,
)
from snfs.emulator.db import ATTACHMENT_FIELDS, attachment_field, record_field_resolver
from snfs.emulator.encoded_query import CompiledQuery, FieldResolver, and_compiled, compile_query
from snfs.emulator.state import Emulator
from snfs.emulator.tables import ATTACHMENT_TABLE, TABLES, can_access, readable_tables


def known_table(request: Request) -> str:
    table = request.path_params["table"]
    if table not in TABLES:
        raise ApiError(400, f"Invalid table {table}", None)
    return table


def table_query(
    request: Request, emu: Emulator, resolve: FieldResolver, fields: tuple[str, ...]
) -> CompiledQuery:
    strict = emu.config.invalid_query_returns_no_rows
    query = compile_query(request.query_params.get("sysparm_query", ""), resolve, strict)
    pairs = name_value_filters(request, fields)
    return and_compiled(query, compile_query(pairs, resolve, strict)) if pairs else query


def select_fields(request: Request, record: dict[str, str]) -> dict[str, str]:
    wanted = [
        f.strip() for f in request.query_params.get("sysparm_fields", "").split(",") if f.strip()
    ]
    known = [f for f in wanted if f in record]  # invalid names are ignored
    return {f: record[f] for f in known} if known else record


def writable(emu: Emulator, user: User, table: str) -> None:
    if not can_access(user.roles, table):
        raise acl_denied(emu)


async def list_records(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    table = known_table(request)
    limit, offset = paging(request, emu.config.table_default_limit)
    if not can_access(user.roles, table):  # like ACLs: the rows are just not there
        return render(request, {"result": []}, headers={"X-Total-Count": "0"})
    query = table_query(request, emu, record_field_resolver(table), TABLES[table].fields)
    no_count = request.query_params.get("sysparm_no_count", "").lower() == "true"
    page = emu.store.list_records(table, query, limit, offset, count=not no_count)
    result = [select_fields(request, r) for r in page.rows]
    body: dict[str, Any] = {"result": result}
    done = await spend(emu, len(page.rows))
    if done is not None:  # cancelled by the quota: the rows scanned so far, and the error
        body = {"result": result[:done], **quota_exceeded()}
    if no_count:  # no `select count(*)`: no X-Total-Count and no Link
        return render(request, body)
    return render(request, body, headers=list_headers(request, limit, offset, page.total))


async def get_record(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    table = known_table(request)
    writable(emu, user, table)
    record = emu.store.get_record(table, request.path_params["sys_id"])
    if record is None:
        raise not_found()
    return render(request, {"result": select_fields(request, record)})


async def create_record(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    table = known_table(request)
    writable(emu, user, table)
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(
            400, "Exception while reading request", "The payload is not valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "Exception while reading request", "The payload must be a JSON object.")
    values = {k: "" if v is None else str(v) for k, v in body.items()}
    record = emu.store.insert_record(
        table, values, user.name, sys_id=_valid_sys_id(values.get("sys_id"))
    )
    location = f"{base_url(request)}{api_prefix(request)}/table/{table}/{record['sys_id']}"
    return render(request, {"result": select_fields(request, record)}, 201, {"Location": location})


def _valid_sys_id(value: str | None) -> str | None:
    """A client may choose the sys_id (as on a real instance) if it is 32 lowercase hex digits."""
    if value and len(value) == 32 and all(c in "0123456789abcdef" for c in value):
        return value
    return None


async def delete_record(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    table = known_table(request)
    writable(emu, user, table)
    sys_id = request.path_params["sys_id"]
    if emu.store.get_record(table, sys_id) is None:
        raise not_found()
    for att_id in emu.store.delete_record(table, sys_id):
        emu.blobs.delete(att_id)
    return Response(status_code=204)


# -- Aggregate API ----------------------------------------------------------------------------

AGGREGATES = (("avg", "AVG"), ("min", "MIN"), ("max", "MAX"), ("sum", "SUM"))


async def stats(request: Request) -> Response:
    user = require_user(request)
    emu = emu_of(request)
    table = request.path_params["table"]
    params = request.query_params
    if table == ATTACHMENT_TABLE:
        roles = emu.config.aggregate_roles
        if "*" not in roles and not (user.roles & roles):
            # Aggregate API docs: read access on the table, by role; without it, 403.
            raise ApiError(403, ACL_DENIED, "User has no read access to sys_attachment")
        resolve: FieldResolver = attachment_field
        query = table_query(request, emu, resolve, ATTACHMENT_FIELDS)
        where, args = emu.store.attachment_where(query, readable_tables(user.roles))
        source, base_args = "sys_attachment", []
    elif table in TABLES:
        if not can_access(user.roles, table):
            raise acl_denied(emu)
        resolve = record_field_resolver(table)
        query = table_query(request, emu, resolve, TABLES[table].fields)
        where, args = f"table_name = ? AND ({query.where})", query.params
        source, base_args = "records", [table]
    else:
        raise ApiError(400, f"Invalid table {table}", None)
    group_by = [f.strip() for f in params.get("sysparm_group_by", "").split(",") if f.strip()]
    groups = [(name, fld) for name in group_by if (fld := resolve(name)) is not None]
    aggs = []
    for key, fn in AGGREGATES:
        for name in params.get(f"sysparm_{key}_fields", "").split(","):
            fld = resolve(name.strip()) if name.strip() else None
            if fld is not None:
                expr = f"CAST({fld.sql} AS REAL)" if fn in ("AVG", "SUM") else fld.sql
                aggs.append((key, name.strip(), expr))
    rows = emu.store.aggregate(source, where, [*base_args, *args], [g.sql for _, g in groups], aggs)
    with_count = params.get("sysparm_count", "").lower() == "true"
    if await spend(emu, sum(count for _, count, _ in rows)) is not None:
        return render(request, {"result": [], **quota_exceeded()})

    def stats_of(count: int, values: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"count": str(count)} if with_count else {}
        for (key, name, _), value in zip(aggs, values, strict=True):
            out.setdefault(key, {})[name] = _format(key, value)
        return out

    if groups:
        result = [
            {
                "stats": stats_of(count, values),
                "groupby_fields": [
                    {"field": name, "value": v} for (name, _), v in zip(groups, keys, strict=True)
                ],
            }
            for keys, count, values in rows
        ]
        return render(request, {"result": result})
    _, count, values = rows[0]
    return render(request, {"result": {"stats": stats_of(count, values)}})


def _format(key: str, value: str) -> str:
    if value == "" or key in ("min", "max"):
        return value
    number = float(value)
    return (
        f"{number:.4f}"
        if key == "avg"
        else (str(int(number)) if number.is_integer() else str(number))
    )
