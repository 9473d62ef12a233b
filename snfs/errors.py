"""One exception hierarchy for everything that talks to an instance.

Each error carries the errno the filesystem answers with, the HTTP status (if any) and the
instance's `error.message`. Messages never contain secrets: they are built from method, path
and the instance's own message only.
"""

from __future__ import annotations

import errno as _errno


class SnfsError(Exception):
    """Base class; `errno` is what a FUSE handler returns for it.

    The retry facts are declared here, with the default of each class; the HTTP core sets them
    per answer where the same class can go either way (a 502 is retryable for a GET only).
    """

    errno: int = _errno.EIO
    retryable: bool = False  # asking again may succeed
    in_doubt: bool = False  # a non-idempotent request may have been carried out
    no_wait: bool = False  # ask again at once (a refreshed token), no backoff
    retry_after: float | None = None  # the server's Retry-After, in seconds
    discard_partial: bool = False  # bytes already received of this download must not be kept

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
    retryable = True


class MfaRequired(AuthError):
    """401 with `X-MFA_TOKEN`: the user has multi-factor authentication, a password alone
    is refused."""


class NotAnApi(SnfsError):
    """A 2xx answer that is an HTML page (a hibernating developer instance, a login or SSO
    page, a proxy), not the REST API's JSON. Asking again at once does not help."""

    errno = _errno.EIO


class FailedInBody(SnfsError):
    """A 2xx answer whose body says it failed (`error`, `"status": "failure"`): e.g. a list
    cancelled by the transaction quota, with a partial `result`. Never a complete answer."""

    errno = _errno.EIO


class NotTheContent(SnfsError):
    """A `/file` answer that is not the attachment: a page instead of it, or bytes whose
    length or SHA-256 differ from the attachment's metadata."""

    errno = _errno.EIO
    discard_partial = True


class QuotaCut(SnfsError):
    """A download broken at the same point again and again: the instance's transaction quota
    ends it before it can finish."""

    errno = _errno.EIO


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


class CertificateError(ConnectionFailed):
    """The instance's TLS certificate is not trusted (self-signed, a TLS-inspecting proxy's
    own CA, a name that does not match). Asking again gives the same answer: never retried."""

    errno = _errno.EIO


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside `exc` with exception groups flattened (trio wraps what fails in a
    nursery in one), or `exc` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def unwrap(exc: BaseException) -> BaseException:
    """The error to act on in `exc`: its first `SnfsError` when it holds one, else its first
    leaf. A group of one is that one."""
    found = leaves(exc)
    return next((e for e in found if isinstance(e, SnfsError)), found[0])
