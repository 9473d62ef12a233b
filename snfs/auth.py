"""Authentication for the instance: HTTP Basic, a static bearer token, or OAuth 2.

All three are `httpx.Auth` objects. Secrets are held in `snfs.secrets.Secret`, so neither the
objects' repr nor any log line or exception message can show them.

OAuth talks to `/oauth_token.do` (form-encoded, as the instance requires): it gets a token on
first use with the configured grant (`password` or `client_credentials`), refreshes it with the
`refresh_token` grant shortly before `expires_in` runs out, and once when a request answers 401;
if the refresh is refused it logs in again with the original grant. A `trio.Lock` makes
concurrent requests share one token request.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from snfs.errors import AuthError, ServerError
from snfs.secrets import Secret

log = logging.getLogger("snfs.auth")

__all__ = ["BasicAuth", "BearerToken", "OAuth"]


class BasicAuth(httpx.Auth):
    def __init__(self, user: str, password: str | Secret) -> None:
        self.user = user
        self._password = Secret(password)

    def _header(self) -> str:
        raw = f"{self.user}:{self._password.reveal()}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header()
        yield request

    def __repr__(self) -> str:
        return f"BasicAuth(user={self.user!r}, password=***)"


class BearerToken(httpx.Auth):
    def __init__(self, token: str | Secret) -> None:
        self._token = Secret(token)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "Bearer " + self._token.reveal()
        yield request

    def __repr__(self) -> str:
        return "BearerToken(***)"


@dataclass
class _Token:
    access: Secret
    refresh: Secret | None
    expires_at: float  # time.monotonic() deadline
    lifetime: float
    generation: int


class OAuth(httpx.Auth):
    """OAuth 2 against the instance's `/oauth_token.do`."""

    # Refresh this long before expiry: 10% of the lifetime, at most a minute.
    REFRESH_FRACTION = 0.1
    REFRESH_MAX_MARGIN = 60.0

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str | Secret,
        *,
        grant: str = "password",
        user: str | None = None,
        password: str | Secret | None = None,
    ) -> None:
        if grant not in ("password", "client_credentials"):
            raise ValueError(f"unsupported OAuth grant {grant!r}")
        if grant == "password" and (not user or password is None):
            raise ValueError("the password grant needs a user and a password")
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = Secret(client_secret)
        self.grant = grant
        self.user = user
        self._password = Secret(password) if password is not None else None
        self._token: _Token | None = None
        self._generation = 0
        self._lock: trio.Lock | None = None
        self._http: httpx.AsyncClient | None = None
        self._own_http = False
        self.token_requests = 0  # how many times /oauth_token.do was asked (for stats/tests)
        self.on_token_request: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return (
            f"OAuth(token_url={self.token_url!r}, client_id={self.client_id!r}, "
            f"grant={self.grant!r}, user={self.user!r})"
        )

    # -- wiring -------------------------------------------------------------------------------

    def bind(self, http: httpx.AsyncClient) -> None:
        """Send token requests through this client (its pool, TLS settings and timeouts)."""
        self._http = http
        self._own_http = False

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
        self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=30.0)
            self._own_http = True
        return self._http

    def invalidate(self) -> None:
        """Forget the access token (the next request refreshes it)."""
        if self._token is not None:
            self._token.expires_at = 0.0

    # -- token requests -----------------------------------------------------------------------

    async def _post(self, form: dict[str, str]) -> dict[str, Any]:
        self.token_requests += 1
        if self.on_token_request:
            self.on_token_request()
        grant = form["grant_type"]
        # Transport errors propagate as httpx exceptions: the client's retry loop handles them.
        resp = await self._client().post(
            self.token_url, data=form, auth=httpx.Auth(), headers={"Accept": "application/json"}
        )
        if resp.status_code != 200:
            message = _oauth_error(resp)
            cls = ServerError if resp.status_code >= 500 or resp.status_code == 429 else AuthError
            log.debug("token request (%s) refused: %s %s", grant, resp.status_code, message)
            err = cls(
                f"POST /oauth_token.do ({grant}): {resp.status_code} {message}",
                status=resp.status_code,
                instance_message=message,
                method="POST",
                path="/oauth_token.do",
            )
            # 429/503 from the token endpoint: the client's retry loop may try again.
            err.retryable = resp.status_code in (429, 502, 503, 504)
            raise err
        try:
            body = resp.json()
            if not isinstance(body, dict) or not body.get("access_token"):
                raise ValueError
        except ValueError:
            raise AuthError(
                f"POST /oauth_token.do ({grant}): answer has no access_token",
                status=resp.status_code,
                method="POST",
                path="/oauth_token.do",
            ) from None
        return body

    def _store(self, body: dict[str, Any], old: _Token | None) -> _Token:
        try:
            lifetime = float(body.get("expires_in") or 1800)
        except (TypeError, ValueError):
            lifetime = 1800.0
        refresh = body.get("refresh_token")
        self._generation += 1
        token = _Token(
            access=Secret(str(body["access_token"])),
            # The refresh grant may return only an access token: keep the refresh token.
            refresh=Secret(str(refresh)) if refresh else (old.refresh if old else None),
            expires_at=time.monotonic() + lifetime,
            lifetime=lifetime,
            generation=self._generation,
        )
        self._token = token
        return token

    def _base_form(self, grant: str) -> dict[str, str]:
        return {
            "grant_type": grant,
            "client_id": self.client_id,
            "client_secret": self._client_secret.reveal(),
        }

    async def _login(self) -> _Token:
        form = self._base_form(self.grant)
        if self.grant == "password":
            assert self._password is not None and self.user is not None
            form.update(username=self.user, password=self._password.reveal())
        token = self._store(await self._post(form), self._token)
        log.debug("OAuth: new token (%s grant), lifetime %.0f s", self.grant, token.lifetime)
        return token

    async def _refresh(self, old: _Token) -> _Token:
        if old.refresh is not None:
            form = self._base_form("refresh_token")
            form["refresh_token"] = old.refresh.reveal()
            try:
                token = self._store(await self._post(form), old)
                log.debug("OAuth: token refreshed, lifetime %.0f s", token.lifetime)
                return token
            except AuthError:
                log.debug("OAuth: refresh refused; logging in again with the %s grant", self.grant)
        return await self._login()

    def _needs_refresh(self, token: _Token) -> bool:
        margin = min(self.REFRESH_MAX_MARGIN, token.lifetime * self.REFRESH_FRACTION)
        return time.monotonic() >= token.expires_at - margin

    async def token(self, *, stale_generation: int | None = None) -> _Token:
        """The current token; a new one if there is none, it is about to expire, or it is
        the token of `stale_generation` (which just earned a 401). One request at a time."""
        if self._lock is None:
            self._lock = trio.Lock()
        async with self._lock:
            tok = self._token
            if tok is None:
                return await self._login()
            if stale_generation is not None and tok.generation == stale_generation:
                return await self._refresh(tok)
            if stale_generation is None and self._needs_refresh(tok):
                return await self._refresh(tok)
            return tok

    # -- httpx.Auth ---------------------------------------------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("snfs.auth.OAuth works with httpx.AsyncClient only")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        tok = await self.token()
        request.headers["Authorization"] = "Bearer " + tok.access.reveal()
        response = yield request
        if response.status_code != 401:
            return
        # Refresh once (unless a concurrent request already did) and, when the body can be
        # sent again, resend. A streamed body cannot: the caller rebuilds the request.
        tok = await self.token(stale_generation=tok.generation)
        if not isinstance(request.stream, httpx.ByteStream):
            return
        request.headers["Authorization"] = "Bearer " + tok.access.reveal()
        yield request


def _oauth_error(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.reason_phrase or ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or "")
        desc = body.get("error_description")
        return " ".join(str(x) for x in (err, desc) if x)
    return ""
