"""What the soak's workers were promised, and the check of the instance against it.

Kernel-free and pure, so the check itself is tested (tests/test_soak_check.py) without a mount.

Each worker owns its names (no other worker touches them), so what its names in one record may
end as on the instance follows from that worker's own calls, in order:

- a call that succeeded is certain: after a successful `close` (or `fsync`) the name holds
  exactly those bytes; after a successful `rm`, or `mv` away, nothing;
- a call that failed (an errno, a daemon killed under it) may or may not have happened, as a
  whole: a failed `mv a b` leaves either both names as they were or the move done, never
  both holding a's bytes. A failed `close` still promises its bytes may arrive (the mount
  keeps and retries them), but bytes that were never whole at a `close` or `fsync` (a write cut
  short) are never a possible outcome.

So the model of one worker's names in one record (a `Group`) is the set of joint outcomes they
may end with: tuples, one entry per name, of a SHA-256 hex digest, or None for "no attachment of
this name". After the mount is quiesced the instance must match one of them: for every name
exactly one attachment with that digest, or none for None.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

ABSENT = None  # "no attachment of this name"

Outcome = str | None
State = tuple[Outcome, ...]

# Kinds of violation, each one of the promises of docs/SEMANTICS.md ("Writing"):
LOST = "lost"  # a closed file (or its rename) is not on the instance
DUPLICATE = "duplicate"  # two attachments of one name: no worker creates two
TORN = "torn"  # bytes that were whole at no close or fsync of any worker
STALE = "stale"  # an older version of the name where a newer close was promised
RESURRECTED = "resurrected"  # a name removed (rm, mv away) for certain is back
MISPLACED = "misplaced"  # whole bytes of a version, but not one this name may hold
HALF_DONE = "half-done"  # each name plausible alone, together no outcome (a rename copied)
STRAY = "stray"  # an attachment under a name no worker ever used
UNSETTLED = "unsettled"  # still owed once faults stopped and sync ran: never sent
HANG = "hang"  # a worker's call, sync or unmount that did not return
MAX_STATES = 50_000  # joint outcomes kept per group; beyond it the oldest doubts are merged


class Group:
    """One worker's names in one record, and the joint outcomes they may end with."""

    def __init__(self, record: str, names: Iterable[str], scratch: Iterable[str] = ()) -> None:
        self.record = record
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.scratch = set(scratch)  # tools' scratch names (snfs.temp_names): may stay local
        self.states: set[State] = {(ABSENT,) * len(self.names)}
        self.ever: dict[str, set[Outcome]] = {n: {ABSENT} for n in self.names}
        self.history: dict[str, deque[str]] = {n: deque(maxlen=12) for n in self.names}
        self.log: deque[str] = deque(maxlen=24)  # every name's calls, in order

    def possible(self, name: str) -> set[Outcome]:
        i = self.index[name]
        return {s[i] for s in self.states}

    def exists(self, name: str) -> bool:
        """Certainly there (locally and, once settled, on the instance)."""
        return ABSENT not in self.possible(name)

    def note(self, name: str, text: str) -> None:
        """What was done to `name`, stamped with the wall clock (to find it in the mount log)."""
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}"
        self.history[name].append(f"{stamp} {text}")
        self.log.append(f"{stamp} {name}: {text}")

    def _with(self, states: Iterable[State], name: str, outcome: Outcome) -> set[State]:
        i = self.index[name]
        self.ever[name].add(outcome)
        return {s[:i] + (outcome,) + s[i + 1 :] for s in states}

    def certain(self, name: str, outcome: Outcome, note: str) -> None:
        """A call that succeeded: `name` now ends as `outcome`, whatever it was."""
        self.states = self._with(self.states, name, outcome)
        self.note(name, note)

    def maybe(self, name: str, outcomes: AbstractSet[Outcome], note: str) -> None:
        """A call that failed: `name` ends as before, or as one of `outcomes`."""
        after: set[State] = set(self.states)
        for o in outcomes:
            after |= self._with(self.states, name, o)
        self._keep(after)
        self.note(name, note)

    def renamed(self, src: str, dst: str, ok: bool, note: str) -> None:
        """`mv src dst`: done (ok), or done or not, as a whole (failed)."""
        i, j = self.index[src], self.index[dst]
        moved = set()
        for s in self.states:
            if s[i] is ABSENT:
                continue
            t = list(s)
            t[j], t[i] = s[i], ABSENT
            moved.add(tuple(t))
            self.ever[dst].add(s[i])
        self.ever[src].add(ABSENT)
        if ok:
            self.states = moved or self.states
        else:
            self._keep(self.states | moved)
        self.note(src, f"{note} (src)")
        self.note(dst, f"{note} (dst)")

    def _keep(self, states: set[State]) -> None:
        if len(states) > MAX_STATES:  # only ever looser: each name keeps all it may hold
            states = set(list(states)[:MAX_STATES])
        self.states = states


@dataclass
class Violation:
    kind: str
    where: str  # table/record/name, or what hung
    detail: str
    history: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"VIOLATION [{self.kind}] {self.where}: {self.detail}"


def describe(outcome: Outcome, labels: dict[str, str]) -> str:
    if outcome is None:
        return "nothing"
    return labels.get(outcome, f"unknown bytes sha256={outcome[:12]}")


def describe_set(outcomes: Iterable[Outcome], labels: dict[str, str]) -> str:
    return "{" + ", ".join(sorted(describe(o, labels) for o in set(outcomes))) + "}"


def _kind(group: Group, name: str, actual: Outcome, labels: dict[str, str]) -> str | None:
    """The violation one name's attachment is on its own, or None if it is a possible one."""
    possible = group.possible(name)
    if actual in possible:
        return None
    if actual is ABSENT:
        return None if name in group.scratch else LOST
    if actual not in labels:
        return TORN
    if possible == {ABSENT}:
        return RESURRECTED if actual in group.ever[name] else MISPLACED
    return STALE if actual in group.ever[name] else MISPLACED


def _fits(group: Group, state: State, actual: State, blocked: AbstractSet[str]) -> bool:
    for name, want, have in zip(group.names, state, actual, strict=True):
        if have == want:
            continue
        if have is ABSENT and name in group.scratch:
            continue  # a scratch name may stay local
        if name in blocked and have in group.ever[name]:
            continue  # kept, shown as not sent: the instance may keep an older version
        if have is not ABSENT and have in _moved_into(group, blocked):
            continue  # the source of a rename into a blocked file (see _moved_into)
        return False
    return True


def _moved_into(group: Group, blocked: AbstractSet[str]) -> set[Outcome]:
    """Versions a blocked name ever had. A rename without PATCH is a copy that replaces its
    source once stored; when that copy is then blocked (opened for writing again, the daemon
    killed), its bytes are no close's and are never sent, so the source attachment is never
    deleted: the last closed bytes stay on the instance under the old name (docs/WRITES.md,
    "The journal is the state": recovery never deletes an attachment for bytes no close
    accepted). Soak seed 407 (default mode): w1-c.txt moved to w1-a.txt, w1-a.txt then killed
    while open; the instance kept w1-c.txt."""
    out: set[Outcome] = set()
    for name in blocked:
        out |= group.ever.get(name, set())
    return out


def check(
    table: str,
    groups: Iterable[Group],
    instance: dict[str, list[tuple[str, str]]],
    labels: dict[str, str],
    blocked: AbstractSet[tuple[str, str]] = frozenset(),
) -> list[Violation]:
    """Compare the instance (record -> [(file_name, sha256)]) with what the workers were
    promised. `labels` names every whole version any worker closed or fsynced (sha256 ->
    label). `blocked`: (record, name) the mount shows as kept and not sent (killed while open
    for writing, say); such a name may still hold any version it ever had, but never torn bytes
    or two attachments."""
    out: list[Violation] = []
    on_instance: dict[tuple[str, str], list[str]] = {}
    for record, rows in instance.items():
        for file_name, digest in rows:
            on_instance.setdefault((record, file_name), []).append(digest)
    known = set()
    for group in sorted(groups, key=lambda g: (g.record, g.names)):
        known |= {(group.record, n) for n in group.names}
        out += _check_group(table, group, on_instance, labels, blocked)
    for key, digests in sorted(on_instance.items()):
        if key not in known:
            out.append(
                Violation(
                    STRAY,
                    f"{table}/{key[0]}/{key[1]}",
                    f"{len(digests)} attachment(s) under a name no worker used: "
                    + describe_set(digests, labels),
                )
            )
    return out


def _check_group(
    table: str,
    group: Group,
    on_instance: dict[tuple[str, str], list[str]],
    labels: dict[str, str],
    blocked: AbstractSet[tuple[str, str]],
) -> list[Violation]:
    out: list[Violation] = []
    held = {n for (r, n) in blocked if r == group.record}
    actual: list[Outcome] = []
    for name in group.names:
        where = f"{table}/{group.record}/{name}"
        digests = on_instance.get((group.record, name), [])
        expected = describe_set(group.possible(name), labels)
        history = list(group.history[name])
        if len(digests) > 1:
            out.append(
                Violation(
                    DUPLICATE,
                    where,
                    f"{len(digests)} attachments {sorted(describe(d, labels) for d in digests)};"
                    f" expected one of {expected}",
                    history,
                )
            )
            actual.append(ABSENT)
            continue
        have = digests[0] if digests else ABSENT
        actual.append(have)
        kind = _kind(group, name, have, labels)
        if kind is not None and name in held and have in group.ever[name]:
            kind = None
        if kind is not None and have is not ABSENT and have in _moved_into(group, held):
            kind = None  # the source of a rename into a blocked file (see _moved_into)
        if kind is not None:
            out.append(
                Violation(
                    kind,
                    where,
                    f"the instance has {describe(have, labels)}; expected one of {expected}",
                    history,
                )
            )
    if out:
        return out
    state = tuple(actual)
    if any(_fits(group, s, state, held) for s in group.states):
        return out
    held_now = ", ".join(
        f"{n}={describe(a, labels)}"
        for n, a in zip(group.names, state, strict=True)
        if a is not ABSENT
    )
    return [
        Violation(
            HALF_DONE,
            f"{table}/{group.record}/{group.names[0].split('.')[0]}*",
            "each name alone is possible, together they are no outcome the calls allow (a "
            f"rename half done?): the instance has {held_now or 'none of them'}",
            list(group.log),
        )
    ]
