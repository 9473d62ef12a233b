"""Emulator switches declared once: a config field with `switch(...)` is its command-line
switch too (flag, help, how the given text becomes the field's value). The field's default is
the switch's default: a switch not given leaves it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Switch:
    help: str | None
    flag: str | None  # default: --field-name
    type: Callable[[str], Any] | None  # argparse `type`; None with `const`: a flag
    const: Any  # the value a flag sets (not MISSING: a flag)
    convert: Callable[[Any], Any]  # the parsed value(s) -> the field's value
    append: bool  # repeatable; the values collect into a list
    metavar: str | None
    choices: Any
    group: str | None


def _same(v: Any) -> Any:
    return v


def switch(
    default: Any = MISSING,
    help: str | None = None,
    *,
    flag: str | None = None,
    type: Callable[[str], Any] | None = str,
    const: Any = MISSING,
    convert: Callable[[Any], Any] = _same,
    append: bool = False,
    metavar: str | None = None,
    choices: Any = None,
    group: str | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    meta = {"switch": Switch(help, flag, type, const, convert, append, metavar, choices, group)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _switches(cls: type) -> list[tuple[Field[Any], Switch]]:
    return [(f, f.metadata["switch"]) for f in fields(cls) if "switch" in f.metadata]


def add_switches(p: argparse.ArgumentParser, cls: type) -> None:
    """One argparse switch per `switch(...)` field of the dataclass `cls`."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f, s in _switches(cls):
        target: Any = groups.setdefault(s.group, p.add_argument_group(s.group)) if s.group else p
        kw: dict[str, Any] = {"dest": f.name, "help": s.help, "default": None}
        if s.const is not MISSING:
            kw.update(action="store_const", const=s.const)
        else:
            kw.update(type=s.type, metavar=s.metavar, choices=s.choices)
            if s.append:
                kw["action"] = "append"
        target.add_argument(s.flag or "--" + f.name.replace("_", "-"), **kw)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` whose switch was given, converted: `cls(**given(...))` keeps the
    defaults of the others."""
    out: dict[str, Any] = {}
    for f, s in _switches(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = s.convert(value)
    return out
