"""Users, HTTP Basic, and OAuth bearer tokens from /oauth_token.do (kept in memory)."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from dataclasses import dataclass, field

REFRESH_LIFETIME = 100 * 24 * 3600  # KB0791140: refresh tokens live 100 days


@dataclass(frozen=True)
class User:
    name: str
    password: str
    roles: frozenset[str]


@dataclass
class Token:
    user: str
    client_id: str
    expires_at: float


@dataclass
class OAuthError(Exception):
    status: int
    body: dict[str, str]


def parse_user(spec: str) -> User:
    """`NAME:PASSWORD[:ROLE,ROLE]` (roles default to none)."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[0]:
        raise ValueError(f"bad user {spec!r}: expected NAME:PASSWORD[:ROLE,ROLE]")
    roles = (
        frozenset(r.strip() for r in parts[2].split(",") if r.strip())
        if len(parts) == 3
        else frozenset()
    )
    return User(parts[0], parts[1], roles)


@dataclass
class Auth:
    users: dict[str, User]
    clients: dict[str, str]  # OAuth client_id -> client_secret
    token_lifetime: int = 1799
    client_credentials_user: str = "admin"
    access: dict[str, Token] = field(default_factory=dict)
    refresh: dict[str, Token] = field(default_factory=dict)

    def authenticate(self, header: str | None) -> User | None:
        """The user an Authorization header proves, or None."""
        if not header:
            return None
        scheme, _, cred = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                name, _, password = base64.b64decode(cred.strip()).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user = self.users.get(name)
            return user if user and secrets.compare_digest(user.password, password) else None
        if scheme == "bearer":
            token = self.access.get(cred.strip())
            if token is None or token.expires_at <= time.time():
                return None
            return self.users.get(token.user)
        return None

    # -- /oauth_token.do ----------------------------------------------------------------------
    def grant(self, form: dict[str, str]) -> dict[str, object]:
        denied = OAuthError(401, {"error_description": "access_denied", "error": "server_error"})
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if (
            not client_id
            or self.clients.get(client_id) is None
            or not secrets.compare_digest(self.clients[client_id], secret)
        ):
            raise denied
        grant_type = form.get("grant_type", "")
        if grant_type == "password":
            user = self.users.get(form.get("username", ""))
            if user is None or not secrets.compare_digest(user.password, form.get("password", "")):
                raise denied
            return self._issue(user.name, client_id, with_refresh=True)
        if grant_type == "client_credentials":
            if self.client_credentials_user not in self.users:
                raise denied
            return self._issue(self.client_credentials_user, client_id, with_refresh=False)
        if grant_type == "refresh_token":
            old = self.refresh.get(form.get("refresh_token", ""))
            if old is None or old.expires_at <= time.time() or old.client_id != client_id:
                raise denied
            # Docs: a refresh grant returns only an access token.
            return self._issue(old.user, client_id, with_refresh=False)
        raise OAuthError(
            400, {"error_description": "access_denied", "error": "unsupported_grant_type"}
        )

    def _issue(self, user: str, client_id: str, with_refresh: bool) -> dict[str, object]:
        now = time.time()
        # Docs: requests within the lifetime of the current access token get that same token.
        current = next(
            (
                t
                for t, tok in self.access.items()
                if tok.user == user and tok.client_id == client_id and tok.expires_at - now > 1
            ),
            None,
        )
        if current is None:
            current = secrets.token_urlsafe(64)
            self.access[current] = Token(user, client_id, now + self.token_lifetime)
        expires_in = max(0, int(self.access[current].expires_at - now))
        body: dict[str, object] = {
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": expires_in,
        }
        if with_refresh:
            refresh = secrets.token_urlsafe(64)
            self.refresh[refresh] = Token(user, client_id, now + REFRESH_LIFETIME)
            body["refresh_token"] = refresh
        body["access_token"] = current
        return body
