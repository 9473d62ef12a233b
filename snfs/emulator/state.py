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

# Releases the emulator knows, oldest first; only the newest documents PATCH rename.
RELEASES = ("washingtondc", "xanadu", "yokohama", "zurich", "australia")
PATCH_RELEASES = frozenset({"australia"})

DEFAULT_USERS = (User("admin", "admin", frozenset({"admin"})),)
DEMO_USERS = (User("itil", "itil", frozenset({"itil"})), User("hr", "hr", frozenset({"hr"})))


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path = Path(".")
    demo: bool = False
    users: list[User] = field(default_factory=list)
    oauth_clients: dict[str, str] = field(default_factory=lambda: {"snfs": "snfs-secret"})
    # com.glide.attachment.max_size (MB): "1024MB by default" (Attachment API); None = no limit
    max_size_mb: float | None = 1024.0
    by_name_fields: bool = True  # created_by_name/updated_by_name in POST answers (documented)
    extensions: frozenset[str] = frozenset()  # glide.attachment.extensions; empty = all allowed
    range: bool = False
    rename: bool = False  # PATCH rename: only the newest release documents it (see RELEASES)
    release: str = "zurich"
    gzip: bool = True
    gzip_level: int = 1
    chunk_size: int = 1024 * 1024
    state_delay: float = 1.0
    token_lifetime: int = 1799
    client_credentials_user: str = "admin"
    oversize_status: int = 400
    extension_status: int = 400
    unknown_table_upload_status: int = 404
    unknown_path_status: int = 400
    acl_denied_status: int = 404  # Attachment API docs: "does not exist, or ... cannot access it"
    invalid_query_returns_no_rows: bool = False
    attachment_default_limit: int = 1000
    table_default_limit: int = 10000
    # A real instance, not a kind one (docs/EMULATOR.md, "How a real instance differs").
    session_concurrency: int = 1  # transactions at once per session cookie; 0 = no lock
    limit_before_acl: bool = True  # sysparm_limit is applied before ACLs: short/empty pages
    aggregate_roles: frozenset[str] = frozenset({"admin"})  # who may aggregate sys_attachment
    quota: float = 60.0  # transaction quota (s) of Table/Attachment/Aggregate API requests
    row_time: float = 0.0  # server time (s) per row a list or aggregate scans
    file_rate: int = 0  # bytes per second a /file answer is sent at; 0 = as fast as possible
    latency: float = 0.0  # server time (s) of every API request, inside its session
    hibernating: bool = False  # every API path answers 200 with an HTML page
    rate_limit: tuple[int, float] | None = None  # (requests, per seconds) per user
    mfa_users: frozenset[str] = frozenset()  # Basic auth answers 401 + X-MFA_TOKEN
    deny: tuple[tuple[str, str], ...] = ()  # (user, encoded query): attachments it cannot read

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
