"""Injected faults (POST /__emulator__/faults): errors, delays and broken streams on demand."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass
class Fault:
    method: str | None
    path: re.Pattern[str] | None
    count: int
    status: int | None = None
    retry_after: float | None = None
    delay: float | None = None
    drop_after_bytes: int | None = None
    query: re.Pattern[str] | None = None  # searched in the percent-decoded query string
    hold: bool = False  # served, its answer held until released (a reply late on the wire)

    def matches(self, method: str, path: str, query: str = "") -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.query is not None and self.query.search(query) is None:
            return False
        return self.path is None or self.path.search(path) is not None


def parse_fault(spec: dict[str, Any]) -> Fault:
    """Build a Fault from the JSON body; ValueError on a malformed spec."""
    if not isinstance(spec, dict):
        raise ValueError("fault spec must be a JSON object")
    path = spec.get("path")
    count = int(spec.get("count") or 1)
    status = spec.get("status")
    drop = spec.get("drop_after_bytes")
    fault = Fault(
        method=spec.get("method") or None,
        path=re.compile(path) if path else None,
        count=count,
        status=int(status) if status is not None else None,
        retry_after=float(spec["retry_after"]) if spec.get("retry_after") is not None else None,
        delay=float(spec["delay"]) if spec.get("delay") is not None else None,
        drop_after_bytes=int(drop) if drop is not None else None,
        query=re.compile(spec["query"]) if spec.get("query") else None,
        hold=bool(spec.get("hold")),
    )
    if count < 1 or (
        fault.status is None
        and fault.delay is None
        and fault.drop_after_bytes is None
        and not fault.hold
    ):
        raise ValueError(
            "a fault needs count >= 1 and one of status, delay, drop_after_bytes, hold"
        )
    return fault


@dataclass
class Holds:
    """Answers computed and held back (`hold` faults) until `release()`: a test makes "a reply
    computed before X arrives after X" happen by event, not by timing."""

    held: int = 0
    _gate: trio.Event = field(default_factory=trio.Event)

    async def wait(self) -> None:
        gate = self._gate
        self.held += 1
        try:
            await gate.wait()
        finally:
            self.held -= 1

    def release(self) -> None:
        self._gate.set()
        self._gate = trio.Event()


class FaultQueue:
    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.holds = Holds()
        # Set when the faults are cleared: a request a `delay` fault still holds is let go
        # then, so a test that clears its faults in `finally` does not wait out a long delay.
        self._cleared: trio.Event | None = None

    async def sleep(self, delay: float) -> None:
        """Sleep `delay` seconds, or less if the faults are cleared meanwhile."""
        if self._cleared is None:
            self._cleared = trio.Event()
        with trio.move_on_after(delay):
            await self._cleared.wait()

    def add(self, fault: Fault) -> int:
        self.faults.append(fault)
        return self.queued()

    def clear(self) -> None:
        self.faults.clear()
        if self._cleared is not None:
            self._cleared.set()
            self._cleared = None
        self.holds.release()  # nothing stays held once the faults are cleared

    def queued(self) -> int:
        return sum(f.count for f in self.faults)

    def take(self, method: str, path: str, query: str = "") -> Fault | None:
        """The first queued fault matching this request, consuming one of its uses."""
        for fault in self.faults:
            if fault.matches(method, path, query):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None
