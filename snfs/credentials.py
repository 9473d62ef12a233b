"""Credentials for a mount, from the options: which source holds them, in which order.

Secrets come from files, systemd credentials, a private config file, the environment or
~/.netrc, never from the command line (see docs/RUNNING.md)."""

from __future__ import annotations

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
    if o.token_file:
        return BearerToken(load_secret(file=o.token_file))
    if o.token and not o.user:
        return BearerToken(o.token.reveal())
    if not o.user and os.environ.get(o.token_env):
        return BearerToken(load_secret(env=o.token_env))
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


def bearer_token(o: MountOptions) -> str:
    """A static token: the profile's, else `--token-file`, else `$SNFS_TOKEN` (or the
    variable `token_env` names)."""
    if o.token:
        return o.token.reveal()
    if o.token_file:
        return load_secret(file=o.token_file, env=o.token_env)
    return load_secret(env=o.token_env)
