"""The emulator's configuration (every CLI switch) and its live state (store, auth, faults,
stats, sessions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from snfs.emulator.auth import Auth, User
from snfs.emulator.blobs import BlobStore
from snfs.emulator.db import Store
from snfs.emulator.faults import FaultQueue
from snfs.emulator.sessions import Sessions
from snfs.emulator.stats import Stats
from snfs.emulator.switches import switch

# Releases the emulator knows, oldest first; only the newest documents PATCH rename.
RELEASES = ("washingtondc", "xanadu", "yokohama", "zurich", "australia")
PATCH_RELEASES = frozenset({"australia"})

DEFAULT_USERS = (User("admin", "admin", frozenset({"admin"})),)
DEMO_USERS = (User("itil", "itil", frozenset({"itil"})), User("hr", "hr", frozenset({"hr"})))


REAL = "a real instance, not a kind one (docs/EMULATOR.md)"
GZIP_LEVELS = range(1, 10)


def _csv(text: str) -> frozenset[str]:
    return frozenset(t.strip() for t in text.split(",") if t.strip())


def _oauth_clients(specs: list[str]) -> dict[str, str]:
    clients = {"snfs": "snfs-secret"}
    for spec in specs:
        cid, sep, secret = spec.partition(":")
        if not sep or not cid:
            raise SystemExit(f"bad --oauth-client {spec!r}: expected ID:SECRET")
        clients[cid] = secret
    return clients


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


@dataclass
class Config:
    """Every field with `switch(...)` is a command-line switch of `snfs emulator` too, declared
    here once (snfs.emulator.switches); `host`, `port`, `data_dir` and `users` are shared by
    every `--kind` and read by main."""

    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path = Path(".")
    demo: bool = switch(False, "seed the demo data set and users itil, hr", const=True)
    users: list[User] = field(default_factory=list)
    oauth_clients: dict[str, str] = switch(
        flag="--oauth-client",
        append=True,
        metavar="ID:SECRET",
        convert=_oauth_clients,
        factory=lambda: {"snfs": "snfs-secret"},
    )
    # com.glide.attachment.max_size (MB): "1024MB by default" (Attachment API); None = no limit
    max_size_mb: float | None = switch(
        1024.0,
        "com.glide.attachment.max_size (default 1024, as documented; 0: no limit)",
        flag="--max-size",
        type=float,
        metavar="MB",
        convert=lambda v: v if v > 0 else None,
    )
    by_name_fields: bool = switch(  # created_by_name/updated_by_name in POST answers
        True,
        "no created_by_name/updated_by_name in upload answers (releases before them)",
        flag="--no-by-name-fields",
        const=False,
    )
    extensions: frozenset[str] = switch(  # glide.attachment.extensions; empty = all allowed
        frozenset(),
        "glide.attachment.extensions",
        metavar="LIST",
        convert=lambda v: frozenset(e.lstrip(".").lower() for e in _csv(v)),
    )
    range: bool = switch(False, "serve Range requests on /file", const=True)
    rename: bool = False  # PATCH rename: from --release and --no-rename (see RELEASES)
    release: str = switch(
        "zurich",
        "the instance's release: PATCH rename only from australia (default zurich: 405)",
        choices=RELEASES,
    )
    gzip: bool = switch(True, "never gzip /file", flag="--no-gzip", const=False)
    gzip_level: int = switch(1, type=int, choices=GZIP_LEVELS)
    chunk_size: int = switch(1024 * 1024, type=int, metavar="BYTES", convert=lambda v: max(4096, v))
    state_delay: float = switch(1.0, type=float, metavar="SECONDS", convert=lambda v: max(0.0, v))
    token_lifetime: int = switch(1799, type=int, metavar="SECONDS")
    client_credentials_user: str = switch("admin")
    oversize_status: int = switch(400, type=int)
    extension_status: int = switch(400, type=int)
    unknown_table_upload_status: int = switch(404, type=int, choices=(400, 404))
    unknown_path_status: int = switch(400, type=int, choices=(400, 404))
    # Attachment API docs: "does not exist, or ... cannot access it"
    acl_denied_status: int = switch(404, type=int, choices=(403, 404))
    invalid_query_returns_no_rows: bool = switch(False, const=True)
    attachment_default_limit: int = switch(1000, type=int)
    table_default_limit: int = 10000
    # A real instance, not a kind one (docs/EMULATOR.md, "How a real instance differs").
    session_concurrency: int = switch(
        1,
        "transactions at once per JSESSIONID session (default 1; 0: no session lock)",
        type=int,
        metavar="N",
        convert=lambda v: max(0, v),
        group=REAL,
    )
    limit_before_acl: bool = switch(  # sysparm_limit is applied before ACLs: short/empty pages
        True,
        "kind: apply ACLs before sysparm_limit (no short pages)",
        flag="--acl-after-limit",
        const=False,
        group=REAL,
    )
    aggregate_roles: frozenset[str] = switch(  # who may aggregate sys_attachment
        frozenset({"admin"}),
        "roles with read on sys_attachment for the Aggregate API (others: 403); '*': all",
        metavar="ROLES",
        convert=_csv,
        group=REAL,
    )
    quota: float = switch(  # transaction quota (s) of Table/Attachment/Aggregate API requests
        60.0, type=float, metavar="SECONDS", convert=lambda v: max(0.1, v), group=REAL
    )
    row_time: float = switch(  # server time (s) per row a list or aggregate scans
        0.0,
        "per row listed",
        type=float,
        metavar="MS",
        convert=lambda v: max(0.0, v) / 1000,
        group=REAL,
    )
    file_rate: int = switch(  # bytes per second a /file answer is sent at; 0 = unlimited
        0, type=int, metavar="BYTES_PER_S", convert=lambda v: max(0, v), group=REAL
    )
    latency: float = switch(  # server time (s) of every API request, inside its session
        0.0,
        "per API request",
        type=float,
        metavar="MS",
        convert=lambda v: max(0.0, v) / 1000,
        group=REAL,
    )
    hibernating: bool = switch(  # every API path answers 200 with an HTML page
        False, "answer 200 with an HTML page", const=True, group=REAL
    )
    rate_limit: tuple[int, float] | None = switch(  # (requests, per seconds) per user
        None,
        "429 above N requests per user",
        metavar="N/SECONDS",
        convert=parse_rate_limit,
        group=REAL,
    )
    mfa_users: frozenset[str] = switch(  # Basic auth answers 401 + X-MFA_TOKEN
        frozenset(),
        flag="--mfa-user",
        append=True,
        metavar="NAME",
        convert=frozenset,
        group=REAL,
    )
    deny: tuple[tuple[str, str], ...] = switch(  # (user, encoded query): attachments unreadable
        (),
        "attachments matching the encoded QUERY are unreadable to USER (repeatable)",
        append=True,
        metavar="USER:QUERY",
        convert=lambda v: tuple(map(parse_deny, v)),
        group=REAL,
    )

    @property
    def max_size_bytes(self) -> int | None:
        # The property is in MB and "a real attachment size is 1024 * value" (KB units).
        return None if self.max_size_mb is None else int(self.max_size_mb * 1024 * 1024)


class Emulator:
    def __init__(self, config: Config) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(config.data_dir / "emulator.sqlite3")
        self.blobs = BlobStore(config.data_dir / "blobs")
        users = {u.name: u for u in DEFAULT_USERS}
        if config.demo:
            users.update({u.name: u for u in DEMO_USERS})
        users.update({u.name: u for u in config.users})
        self.auth = Auth(
            users, dict(config.oauth_clients), config.token_lifetime, config.client_credentials_user
        )
        self.faults = FaultQueue()
        self.stats = Stats()
        self.sessions = Sessions(config.session_concurrency)
        self.rate_windows: dict[str, list[float]] = {}  # user key -> [window start, count]
        if config.demo:
            self.seed_demo()

    def seed_demo(self) -> None:
        from snfs.emulator.demo_data import seed

        if self.store.get_meta("demo_seeded") is None:
            seed(self.store, self.blobs)
            self.store.set_meta("demo_seeded", "1")

    def wipe(self) -> None:
        self.store.wipe()
        self.blobs.wipe()
        if self.config.demo:
            self.seed_demo()
