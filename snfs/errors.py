"""One exception hierarchy for everything that talks to an instance.

Each error carries the errno the filesystem answers with, the HTTP status (if any) and the
instance's `error.message`. Messages never contain secrets: they are built from method, path
and the instance's own message only.
"""

from __future__ import annotations

import errno as _errno


class SnfsError(Exception):
    """Base class; `errno` is what a FUSE handler returns for it."""

    errno: int = _errno.EIO

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        instance_message: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.instance_message = instance_message
        self.method = method
        self.path = path


class InvalidInput(SnfsError):
    """A table name, sys_id or file name that can never be valid on an instance."""

    errno = _errno.EINVAL


class AuthError(SnfsError):
    """401: wrong or missing credentials."""

    errno = _errno.EACCES


class Forbidden(SnfsError):
    """403: the user's roles do not allow it."""

    errno = _errno.EACCES


class NotFound(SnfsError):
    errno = _errno.ENOENT


class TooLarge(SnfsError):
    """Over the instance's com.glide.attachment.max_size."""

    errno = _errno.EFBIG


class ExtensionRefused(SnfsError):
    """Extension outside glide.attachment.extensions."""

    errno = _errno.EPERM


class RateLimited(SnfsError):
    """429 after every retry."""

    errno = _errno.EAGAIN


class ServerError(SnfsError):
    """5xx after every retry, or another status the client cannot act on."""

    errno = _errno.EIO


class Timeout(SnfsError):
    errno = _errno.ETIMEDOUT


class ConnectionFailed(SnfsError):
    """The instance could not be reached after every retry."""

    errno = _errno.EIO


class ConfigError(SnfsError):
    """Bad configuration: missing secret, insecure URL, unreadable file."""

    errno = _errno.EINVAL


class Unsupported(SnfsError):
    """405: the instance does not offer this operation (e.g. PATCH rename on older releases)."""

    errno = _errno.EOPNOTSUPP
