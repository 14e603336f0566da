"""The package's one exception tree: every failure a caller can act on is a RegistryError.

Third-party errors (pydantic, YAML, later httpx and etcd) are translated where they enter,
so callers catch our classes and never a library's. Each class names the HTTP status the
service will answer with, so the server and the client share one table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    """One thing wrong with one field: ``loc`` is a dotted path such as ``metadata.labels``."""

    loc: str
    message: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}" if self.loc else self.message


class RegistryError(Exception):
    """Root of every error this package raises on purpose."""

    status_code: int = 500
    reason: str = "InternalError"


class ValidationError(RegistryError):
    """The input is malformed; ``errors`` says which fields and why."""

    status_code = 422
    reason = "Invalid"

    def __init__(self, message: str, errors: Iterable[FieldError] = ()) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        detail = "; ".join(str(e) for e in self.errors)
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message


class BadRequestError(ValidationError):
    """The request cannot be read at all: malformed JSON or YAML, an empty body, a selector
    that does not parse, a continue token this registry did not issue.

    Kubernetes answers these 400 BadRequest; a readable request with wrong values is a
    ``ValidationError`` (422 Invalid).
    """

    reason = "BadRequest"
    status_code = 400


class SelectorError(BadRequestError):
    """A label selector does not parse or breaks a rule; the message quotes the bad part."""


class UnsupportedVersionError(ValidationError):
    """The passport's apiVersion or kind is not one this registry serves or converts."""

    reason = "UnsupportedVersion"
    status_code = 422


class TooLargeError(ValidationError):
    """The document is over a documented size or count limit."""

    reason = "RequestEntityTooLarge"
    status_code = 413


class NotFoundError(RegistryError):
    """No node with that id; a node runtime answers this by registering again."""

    status_code = 404
    reason = "NotFound"


class ConflictError(RegistryError):
    """The write collides with stored state: a name taken by another uid, or a stale revision."""

    status_code = 409
    reason = "Conflict"


class RevisionConflictError(ConflictError):
    """A compare-and-swap lost: the object changed since it was read. Read again and retry."""

    reason = "ResourceVersionConflict"


class NotLeadingError(ConflictError):
    """A write of the lifecycle controller, refused: this process no longer holds the
    controller's seat (another replica took it, or it ran out), so its view may be stale."""

    reason = "NotLeading"


class RevisionCompactedError(RegistryError):
    """The resource version asked for is older than the kept history: list again, then watch."""

    status_code = 410
    reason = "Expired"


class StoreUnavailableError(RegistryError):
    """The backing store cannot be reached; nothing was written."""

    status_code = 503
    reason = "ServiceUnavailable"


class TooManyRequestsError(RegistryError):
    """The registry is shedding load: retry after the ``Retry-After`` seconds it gave.

    Kubernetes' API priority and fairness answers 429 the same way; node heartbeats and
    status reports are the last requests to be refused.
    """

    status_code = 429
    reason = "TooManyRequests"


class UnsupportedMediaTypeError(ValidationError):
    """The request body is in a format the API does not read (JSON and YAML are read)."""

    status_code = 415
    reason = "UnsupportedMediaType"


class UnauthorizedError(RegistryError):
    """No credentials, or credentials the registry does not know."""

    status_code = 401
    reason = "Unauthorized"


class ForbiddenError(RegistryError):
    """The caller is known but its role does not allow this request."""

    status_code = 403
    reason = "Forbidden"


class RegistryUnreachableError(RegistryError):
    """The client reached no registry endpoint (connection refused, timeout, 5xx from all)."""

    status_code = 503
    reason = "Unreachable"


class InvalidResponseError(RegistryError):
    """The registry's answer is not what the API promises: not JSON, a document of the wrong
    shape, a body that does not decode. A proxy or another service at that address, usually."""

    status_code = 502
    reason = "InvalidResponse"


class ConfigError(RegistryError):
    """The configuration file or environment holds a wrong value; raised at start-up."""

    reason = "BadConfig"


# -- the Status table ------------------------------------------------------------------------

_STATUS_CLASSES: tuple[type[RegistryError], ...] = (
    ValidationError,
    BadRequestError,  # SelectorError arrives as this: the Status does not tell them apart
    UnsupportedVersionError,
    TooLargeError,
    UnsupportedMediaTypeError,
    NotFoundError,
    ConflictError,
    RevisionConflictError,
    RevisionCompactedError,
    StoreUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
    ForbiddenError,
)

#: Status ``reason`` -> the class a client raises for it (the server answers with the same).
ERRORS_BY_REASON: dict[str, type[RegistryError]] = {c.reason: c for c in _STATUS_CLASSES}
assert len(ERRORS_BY_REASON) == len(_STATUS_CLASSES), "every error class needs its own reason"
#: The first class of each code wins: a bare 422 is a ValidationError, a 409 a ConflictError.
_ERRORS_BY_CODE: dict[int, type[RegistryError]] = {
    c.status_code: c for c in reversed(_STATUS_CLASSES)
}


def _code(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def error_from_status(body: Mapping[str, Any], *, code: int | None = None) -> RegistryError:
    """The error a Kubernetes ``Status`` body describes, as the class the embedded registry
    would raise; by its ``reason``, else by its code (a reason we do not know: a plain
    ``RegistryError``). Never fails on a malformed body: that is what it is reading."""
    reason = str(body.get("reason") or "")
    status = _code(body.get("code"), code or 500)
    message = str(body.get("message") or "") or f"HTTP {status}"
    cls = ERRORS_BY_REASON.get(reason) or _ERRORS_BY_CODE.get(status, RegistryError)
    if issubclass(cls, ValidationError):
        details = body.get("details")
        raw = details.get("causes") if isinstance(details, Mapping) else None
        causes = [
            FieldError(str(c.get("field") or ""), str(c.get("message") or ""))
            for c in (raw if isinstance(raw, list) else [])
            if isinstance(c, Mapping)
        ]
        prefix = message.split(": ", 1)[0] if causes else message
        return cls(prefix, causes)
    return cls(message)
