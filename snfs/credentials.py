"""Credentials for a mount, from the options: which source holds them, in which order.

Secrets come from files, systemd credentials, a private config file, the environment or
~/.netrc, never from the command line (see docs/RUNNING.md)."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from snfs.auth import BasicAuth, BearerToken, OAuth
from snfs.errors import ConfigError
from snfs.secrets import load_secret

if TYPE_CHECKING:
    from snfs.options import MountOptions


def build_auth(o: MountOptions, base_url: str) -> Any:
    """An httpx auth, first source that has them: an explicit file or systemd credential, the
    profile's secret (a private config file), the environment, ~/.netrc."""
    host = urlsplit(base_url).hostname
    token = _static_token(o)
    if token is not None:
        return BearerToken(token)
    if not o.user and not o.oauth_client_id:
        raise ConfigError(
            "no credentials: give --user (password from $SNFS_PASSWORD, "
            "--password-file, --credential or ~/.netrc) or --token-file"
        )
    password = None
    if o.user:
        if o.password_file or o.credential:
            password = load_secret(file=o.password_file, credential=o.credential)
        elif o.password:
            password = o.password.reveal()
        else:
            password = load_secret(env=o.password_env, netrc_host=host, netrc_login=o.user)
    if o.oauth_client_id:
        secret = (
            o.client_secret.reveal()
            if o.client_secret and not o.oauth_secret_file
            else load_secret(file=o.oauth_secret_file, env=o.oauth_secret_env)
        )
        return OAuth(
            base_url + "/oauth_token.do",
            o.oauth_client_id,
            secret,
            grant=o.oauth_grant,
            user=o.user,
            password=password,
        )
    return BasicAuth(o.user or "", password or "")


def _static_token(o: MountOptions) -> str | None:
    """The static bearer token `build_auth` sends, if it sends one: `--token-file` (or a
    systemd credential by that path), else the profile's token, else `$SNFS_TOKEN` (or the
    variable `token_env` names); the last two only without `--user`."""
    if o.token_file:
        return load_secret(file=o.token_file)
    if o.token and not o.user:
        return o.token.reveal()
    if not o.user and os.environ.get(o.token_env):
        return load_secret(env=o.token_env)
    return None


def token_fingerprint(token: str) -> str:
    """Names a token without showing it: a one-way hash, safe in a path (tokens are long
    random strings, so the hash cannot be turned back into one)."""
    return hashlib.sha256(b"snfs spool key\0" + token.encode()).hexdigest()[:32]


def spool_identity(o: MountOptions) -> str:
    """Whose rights owed uploads are sent with. The spool is kept per instance and this key, so
    a pending upload is never resumed with other credentials: `token:<fingerprint>` for a
    static bearer token (two tokens, of two users or one rotated, never share a spool; the
    token itself is never in a path or a log), else `user:NAME`, else `oauth:CLIENT_ID`."""
    token = _static_token(o)
    if token is not None:
        return "token:" + token_fingerprint(token)
    if o.user:
        return f"user:{o.user}"
    if o.oauth_client_id:
        return f"oauth:{o.oauth_client_id}"
    return "token:none"  # no credentials: the backend refuses the mount before the spool


def bearer_token(o: MountOptions) -> str:
    """A static token (token-only backends): the one `build_auth` would send (so the spool key,
    `spool_identity`, names it), else the profile's, else `$SNFS_TOKEN` (or the variable
    `token_env` names), which fails with a clear error when it is not set."""
    token = _static_token(o)
    if token is None and o.token:
        token = o.token.reveal()
    return token if token is not None else load_secret(env=o.token_env)
