"""What every system's backend uses on the wire, below the seam: the instance URL check, the
file-name check, and the quoting of a name in a multipart header."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from snfs.errors import ConfigError, InvalidInput

MAX_FILE_NAME_BYTES = 1000


def is_loopback(host: str) -> bool:
    """`localhost`, `*.localhost` or a loopback address (where plain http is allowed)."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """A system's base URL, checked: https (plain http only for a loopback host or with
    `allow_insecure_http`), a host, no credentials, no query or fragment; `https://` is
    assumed without a scheme. Returns it lower-cased up to the path, without a trailing
    slash; ConfigError (never echoing the URL, which may hold a credential) otherwise."""
    s = (url or "").strip()
    if not s:
        raise ConfigError("no instance given")
    if "://" not in s:
        s = "https://" + s
    try:
        parts = urlsplit(s)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("instance URL is not valid") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"instance URL scheme {scheme!r} is not supported (use https)")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("instance URL must not contain credentials")
    if not host:
        raise ConfigError("instance URL has no host")
    if parts.query or parts.fragment:
        raise ConfigError("instance URL must not have a query or fragment")
    if scheme == "http" and not allow_insecure_http and not is_loopback(host):
        raise ConfigError(
            f"refusing plain http to {host}: use https (or allow insecure http explicitly)"
        )
    return f"{scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def validate_file_name(name: str) -> str:
    """A file name any system can be sent: not empty, no NUL, at most 1,000 UTF-8 bytes;
    InvalidInput otherwise."""
    if (
        not isinstance(name, str)
        or not name
        or "\x00" in name
        or len(name.encode()) > MAX_FILE_NAME_BYTES
    ):
        raise InvalidInput(f"invalid file name {name!r}")
    return name


def multipart_quote(s: str) -> str:
    """A quoted-string parameter value: backslash-escaped quote and backslash; CR/LF cannot
    appear in a header at all (the exact name also travels in the `file_name` field)."""
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "%0D").replace("\n", "%0A")
