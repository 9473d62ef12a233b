"""The tables the emulator knows: their fields, record number prefixes and the roles that read them.

Records are stored schemaless (JSON); these field lists decide which fields a record shows, which
ones a POST may set, and which names an encoded query may use (unknown names are "invalid").
"""

from __future__ import annotations

from dataclasses import dataclass

SYS_FIELDS = (
    "sys_id",
    "sys_created_on",
    "sys_updated_on",
    "sys_created_by",
    "sys_updated_by",
    "sys_mod_count",
    "sys_tags",
    "sys_class_name",
)
TASK_FIELDS = (
    "number",
    "short_description",
    "description",
    "state",
    "priority",
    "impact",
    "urgency",
    "active",
    "opened_at",
    "opened_by",
    "assigned_to",
    "assignment_group",
    "category",
    "close_notes",
    "work_notes",
)
NUMERIC_FIELDS = frozenset({"state", "priority", "impact", "urgency", "sys_mod_count"})

# The itil role reads and writes these (and their attachments); hr_case needs hr; admin sees all.
ITIL_TABLES = frozenset(
    {"incident", "problem", "change_request", "sc_req_item", "sc_task", "kb_knowledge"}
)
HR_TABLES = frozenset({"hr_case"})
ZZ_YY = "ZZ_YY"  # prefix of attachments that belong to image/video fields of a record


@dataclass(frozen=True)
class TableSpec:
    name: str
    prefix: str | None  # record number prefix, None when the table has no number field
    fields: tuple[str, ...]

    @property
    def numeric(self) -> frozenset[str]:
        return NUMERIC_FIELDS


def _task(name: str, prefix: str, *extra: str) -> TableSpec:
    return TableSpec(name, prefix, SYS_FIELDS + TASK_FIELDS + extra)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        _task("incident", "INC", "caller_id", "severity", "image"),
        _task("problem", "PRB", "known_error"),
        _task("change_request", "CHG", "type", "risk"),
        _task("sc_req_item", "RITM", "cat_item", "request"),
        _task("sc_task", "SCTASK", "request_item"),
        TableSpec(
            "kb_knowledge",
            "KB",
            SYS_FIELDS
            + (
                "number",
                "short_description",
                "text",
                "workflow_state",
                "kb_category",
                "author",
                "active",
            ),
        ),
        _task("hr_case", "HRC", "opened_for", "hr_service"),
        TableSpec(
            "sys_user",
            None,
            SYS_FIELDS + ("user_name", "first_name", "last_name", "name", "email", "active"),
        ),
    )
}

ATTACHMENT_TABLE = "sys_attachment"


def base_table(table_name: str) -> str:
    """The record table an attachment's table_name refers to (`ZZ_YYincident` -> `incident`)."""
    return table_name[len(ZZ_YY) :] if table_name.startswith(ZZ_YY) else table_name


def required_roles(table: str) -> frozenset[str]:
    """Roles (besides admin) that may read and write records of `table` and their attachments."""
    table = base_table(table)
    if table in ITIL_TABLES:
        return frozenset({"itil"})
    if table in HR_TABLES:
        return frozenset({"hr"})
    return frozenset()  # admin only


def can_access(roles: frozenset[str], table: str) -> bool:
    if "admin" in roles:
        return True
    if base_table(table) == "sys_user":
        return True  # any signed-in user may read users (writes are not modelled)
    return bool(required_roles(table) & roles)


def readable_tables(roles: frozenset[str]) -> list[str] | None:
    """Record tables whose attachments a user may list; None means all (admin)."""
    if "admin" in roles:
        return None
    return sorted(t for t in TABLES if can_access(roles, t))
