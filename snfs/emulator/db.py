"""SQLite store for records and attachment metadata.

One connection, used only from the trio thread with short synchronous queries: simple and
correct for a test server (SQLite answers these in microseconds). Every value the API shows is a
string, so attachment columns are TEXT; records are JSON objects of strings.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snfs.emulator.encoded_query import CompiledQuery, Field
from snfs.emulator.tables import TABLES, ZZ_YY

# Field order of real sys_attachment responses (recorded from real instances), download_link
# inserted by the API.
ATTACHMENT_FIELDS = (
    "size_bytes",
    "file_name",
    "sys_mod_count",
    "average_image_color",
    "image_width",
    "sys_updated_on",
    "sys_tags",
    "table_name",
    "sys_id",
    "image_height",
    "sys_updated_by",
    "content_type",
    "sys_created_on",
    "size_compressed",
    "compressed",
    "state",
    "table_sys_id",
    "chunk_size_bytes",
    "hash",
    "sys_created_by",
)
ATTACHMENT_NUMERIC = frozenset(
    {
        "size_bytes",
        "size_compressed",
        "sys_mod_count",
        "image_width",
        "image_height",
        "chunk_size_bytes",
    }
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (table_name TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    table_name TEXT NOT NULL, sys_id TEXT NOT NULL, sys_created_on TEXT NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (table_name, sys_id));
-- A table's records in the default order: `sysparm_limit=1` needs no sort of the table.
CREATE INDEX IF NOT EXISTS rec_order ON records (table_name, sys_created_on, sys_id);
CREATE TABLE IF NOT EXISTS sys_attachment (
    {", ".join(f"{f} TEXT NOT NULL DEFAULT ''" for f in ATTACHMENT_FIELDS)},
    pending_until REAL,
    PRIMARY KEY (sys_id));
CREATE INDEX IF NOT EXISTS att_record ON sys_attachment (table_sys_id, table_name);
CREATE INDEX IF NOT EXISTS att_order ON sys_attachment (sys_created_on, sys_id);
-- One table's attachments in the default order (plain paging), and in record order resumed
-- from a key (snfs's keyset pager): both a range scan of an index, never a sort.
CREATE UNIQUE INDEX IF NOT EXISTS att_table_order
    ON sys_attachment (table_name, sys_created_on, sys_id);
CREATE UNIQUE INDEX IF NOT EXISTS att_table_record
    ON sys_attachment (table_name, table_sys_id, sys_id);
CREATE INDEX IF NOT EXISTS att_pending ON sys_attachment (pending_until)
    WHERE pending_until IS NOT NULL;
"""


def now_str(ts: float | None = None) -> str:
    """ServiceNow's `YYYY-MM-DD HH:MM:SS` in UTC."""
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


def new_sys_id() -> str:
    return uuid.uuid4().hex


def attachment_field(name: str) -> Field | None:
    return Field(name, name in ATTACHMENT_NUMERIC) if name in ATTACHMENT_FIELDS else None


def record_field_resolver(table: str):
    spec = TABLES[table]

    def resolve(name: str) -> Field | None:
        if name == "sys_id":
            return Field("sys_id")
        if name not in spec.fields:
            return None
        # `name` is from the table's whitelist, so it is safe inside the JSON path.
        return Field(f"IFNULL(json_extract(data, '$.{name}'), '')", name in spec.numeric)

    return resolve


@dataclass
class Page:
    rows: list[dict[str, str]]
    total: int
    scanned: int = 0  # rows the query read before ACLs dropped any


class Store:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def wipe(self) -> None:
        self.conn.executescript(
            "DELETE FROM records; DELETE FROM sys_attachment; DELETE FROM counters; "
            "DELETE FROM meta;"
        )

    # -- records ------------------------------------------------------------------------------
    def next_number(self, table: str) -> str | None:
        prefix = TABLES[table].prefix
        if prefix is None:
            return None
        self.conn.execute(
            "INSERT OR IGNORE INTO counters (table_name, next) VALUES (?, 10001)", (table,)
        )
        (n,) = self.conn.execute(
            "UPDATE counters SET next = next + 1 WHERE table_name = ? RETURNING next - 1", (table,)
        ).fetchone()
        return f"{prefix}{n:07d}"

    def insert_record(
        self,
        table: str,
        values: dict[str, str],
        user: str,
        sys_id: str | None = None,
        created_on: str | None = None,
    ) -> dict[str, str]:
        spec = TABLES[table]
        stamp = created_on or now_str()
        record = {f: "" for f in spec.fields}
        record.update({k: str(v) for k, v in values.items() if k in spec.fields})
        record.update(
            sys_id=sys_id or new_sys_id(),
            sys_created_on=stamp,
            sys_updated_on=stamp,
            sys_created_by=user,
            sys_updated_by=user,
            sys_mod_count="0",
            sys_class_name=table,
        )
        if spec.prefix and not values.get("number"):
            record["number"] = self.next_number(table) or ""
        self.conn.execute(
            "INSERT INTO records (table_name, sys_id, sys_created_on, data) VALUES (?, ?, ?, ?)",
            (table, record["sys_id"], stamp, json.dumps(record)),
        )
        return record

    def get_record(self, table: str, sys_id: str) -> dict[str, str] | None:
        row = self.conn.execute(
            "SELECT data FROM records WHERE table_name = ? AND sys_id = ?", (table, sys_id)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def delete_record(self, table: str, sys_id: str) -> list[str]:
        """Delete a record and its attachments (plain and ZZ_YY); return the attachment ids."""
        self.conn.execute(
            "DELETE FROM records WHERE table_name = ? AND sys_id = ?", (table, sys_id)
        )
        ids = [
            r[0]
            for r in self.conn.execute(
                "DELETE FROM sys_attachment WHERE table_sys_id = ? AND table_name IN (?, ?) "
                "RETURNING sys_id",
                (sys_id, table, ZZ_YY + table),
            ).fetchall()
        ]
        return ids

    def list_records(
        self, table: str, q: CompiledQuery, limit: int, offset: int, *, count: bool = True
    ) -> Page:
        where = f"table_name = ? AND ({q.where})"
        params = [table, *q.params]
        order = ", ".join(q.order_by + ["sys_created_on ASC", "sys_id ASC"])
        total = -1
        if count:
            sql = f"SELECT COUNT(*) FROM records WHERE {where}"
            total = self.conn.execute(sql, params).fetchone()[0]
        rows = self.conn.execute(
            f"SELECT data FROM records WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        return Page([json.loads(r[0]) for r in rows], total)

    # -- attachments --------------------------------------------------------------------------
    def insert_attachment(self, row: dict[str, str], pending_until: float | None) -> None:
        cols = list(ATTACHMENT_FIELDS)
        self.conn.execute(
            f"INSERT INTO sys_attachment ({', '.join(cols)}, pending_until) "
            f"VALUES ({', '.join('?' * len(cols))}, ?)",
            [row.get(c, "") for c in cols] + [pending_until],
        )

    def promote_pending(self, now: float | None = None) -> None:
        """`pending` becomes `available` once its delay passed (lazily, on the next read)."""
        now = time.time() if now is None else now
        due = self.conn.execute(
            "SELECT sys_id, pending_until FROM sys_attachment WHERE pending_until IS NOT NULL "
            "AND pending_until <= ?",
            (now,),
        ).fetchall()
        for sys_id, until in due:
            self.conn.execute(
                "UPDATE sys_attachment SET state = 'available', sys_updated_by = 'system', "
                "sys_mod_count = CAST(sys_mod_count AS INTEGER) + 1, sys_updated_on = ?, "
                "pending_until = NULL "
                "WHERE sys_id = ?",
                (now_str(until), sys_id),
            )

    def get_attachment(self, sys_id: str) -> dict[str, str] | None:
        self.promote_pending()
        row = self.conn.execute(
            f"SELECT {', '.join(ATTACHMENT_FIELDS)} FROM sys_attachment WHERE sys_id = ?", (sys_id,)
        ).fetchone()
        return dict(row) if row else None

    def delete_attachment(self, sys_id: str) -> bool:
        return (
            self.conn.execute("DELETE FROM sys_attachment WHERE sys_id = ?", (sys_id,)).rowcount > 0
        )

    def rename_attachment(self, sys_id: str, file_name: str, user: str) -> None:
        self.conn.execute(
            "UPDATE sys_attachment SET file_name = ?, sys_updated_by = ?, sys_updated_on = ?, "
            "sys_mod_count = CAST(sys_mod_count AS INTEGER) + 1 WHERE sys_id = ?",
            (file_name, user, now_str(), sys_id),
        )

    def list_attachments(
        self,
        q: CompiledQuery,
        limit: int,
        offset: int,
        readable: list[str] | None,
        deny: Sequence[CompiledQuery] = (),
        limit_before_acl: bool = False,
        *,
        count: bool = True,
        fields: set[str] | None = None,
    ) -> Page:
        """One page. With `limit_before_acl` (real instances: "sysparm_limit is applied before
        ACL evaluation") the page is cut first and the rows the user may not read are dropped
        after, so pages come back short or empty; `total` then counts before ACLs too.
        `count=False` (sysparm_no_count) skips the COUNT(*) and reports total -1; `fields`
        (sysparm_fields, already checked against ATTACHMENT_FIELDS) limits the columns read,
        in the real field order."""
        self.promote_pending()
        order = ", ".join(q.order_by + ["sys_created_on ASC", "sys_id ASC"])
        acl, acl_args = self._acl(readable, deny)
        where, params = (q.where, list(q.params))
        if not limit_before_acl:
            where, params = f"{acl} AND ({q.where})", [*acl_args, *q.params]
        total = -1
        if count:
            total = self.conn.execute(
                f"SELECT COUNT(*) FROM sys_attachment WHERE {where}", params
            ).fetchone()[0]
        keep = ("sys_id", "sys_updated_by")  # what `present` and the ACL need
        cols = [f for f in ATTACHMENT_FIELDS if not fields or f in fields or f in keep]
        rows = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM sys_attachment WHERE {where} "
            f"ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        page = Page([dict(r) for r in rows], total, len(rows))
        if limit_before_acl and acl != "1":
            allowed = self.allowed([r["sys_id"] for r in page.rows], readable, deny)
            page.rows = [r for r in page.rows if r["sys_id"] in allowed]
        return page

    def allowed(
        self, sys_ids: list[str], readable: list[str] | None, deny: Sequence[CompiledQuery] = ()
    ) -> set[str]:
        """Which of these attachments the user may read."""
        acl, acl_args = self._acl(readable, deny)
        if acl == "1" or not sys_ids:
            return set(sys_ids)
        out: set[str] = set()
        for i in range(0, len(sys_ids), 500):
            part = sys_ids[i : i + 500]
            marks = ", ".join("?" * len(part))
            out.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT sys_id FROM sys_attachment WHERE sys_id IN ({marks}) AND {acl}",
                    [*part, *acl_args],
                )
            )
        return out

    @classmethod
    def _acl(
        cls, readable: list[str] | None, deny: Sequence[CompiledQuery]
    ) -> tuple[str, list[Any]]:
        """The read ACL as SQL: the user's tables, minus what a --deny rule hides ("1": all)."""
        where, args = cls._attachment_where(CompiledQuery("1", [], [], False), readable)
        for d in deny:
            where, args = f"{where} AND NOT ({d.where})", [*args, *d.params]
        return ("1", []) if where == "1" else (where, args)

    @staticmethod
    def _attachment_where(q: CompiledQuery, readable: list[str] | None) -> tuple[str, list[Any]]:
        if readable is None:
            return q.where, list(q.params)
        # Like ACLs: rows of tables the user may not read are simply not there.
        marks = ", ".join("?" * len(readable)) or "NULL"
        acl = (
            f"(table_name IN ({marks}) OR (substr(table_name, 1, 5) = '{ZZ_YY}' "
            f"AND substr(table_name, 6) IN ({marks})))"
        )
        return f"{acl} AND ({q.where})", [*readable, *readable, *q.params]

    # -- aggregates ---------------------------------------------------------------------------
    def aggregate(
        self,
        source: str,
        where: str,
        params: Iterable[Any],
        group_exprs: list[str],
        aggs: list[tuple[str, str, str]],
    ) -> list[tuple[list[str], int, list[str]]]:
        """[(group values, count, aggregate values)] for `SELECT ... WHERE ... GROUP BY`.

        `aggs` are (function, field name, sql expression); `source` and expressions come from
        whitelists, never from the request.
        """
        selects = list(group_exprs) + ["COUNT(*)"] + [f"{fn}({expr})" for fn, _, expr in aggs]
        sql = f"SELECT {', '.join(selects)} FROM {source} WHERE {where}"
        if group_exprs:
            sql += f" GROUP BY {', '.join(group_exprs)} ORDER BY {', '.join(group_exprs)}"
        out = []
        for row in self.conn.execute(sql, list(params)).fetchall():
            n = len(group_exprs)
            out.append(
                (
                    [str(v) for v in row[:n]],
                    int(row[n]),
                    ["" if v is None else str(v) for v in row[n + 1 :]],
                )
            )
        return out

    def attachment_where(
        self, q: CompiledQuery, readable: list[str] | None
    ) -> tuple[str, list[Any]]:
        self.promote_pending()
        return self._attachment_where(q, readable)


def seed_attachments(data_dir: Path, table: str, record: str, names: list[str]) -> None:
    """A record of `table` with one attachment row per name (content never stored), written
    straight into a data directory before the emulator starts: thousands of rows in a
    fraction of a second, for listing tests and benchmarks."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / "emulator.sqlite3")
    try:
        store.conn.execute("BEGIN")
        store.insert_record(table, {"short_description": "seeded"}, "admin", sys_id=record)
        for i, name in enumerate(names):
            stamp = f"2026-01-01 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
            store.insert_attachment(
                {
                    "size_bytes": "1",
                    "file_name": name,
                    "sys_mod_count": "1",
                    "sys_updated_on": stamp,
                    "table_name": table,
                    "sys_id": new_sys_id(),
                    "sys_updated_by": "admin",
                    "content_type": "text/plain",
                    "sys_created_on": stamp,
                    "size_compressed": "1",
                    "compressed": "true",
                    "state": "available",
                    "table_sys_id": record,
                    "chunk_size_bytes": "700000",
                    "hash": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",
                    "sys_created_by": "admin",
                },
                None,
            )
        store.conn.execute("COMMIT")
    finally:
        store.close()
