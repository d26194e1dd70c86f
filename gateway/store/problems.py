"""NGSI-LD errors as ProblemDetails (ETSI GS CIM 009 V1.9.1 §5.5.2, §6.3.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

ERROR_BASE: Final = "https://uri.etsi.org/ngsi-ld/errors/"
"""Prefix of every NGSI-LD error type URI."""

PROBLEM_TYPES: Final[Mapping[str, tuple[int, str]]] = {
    "InvalidRequest": (400, "The request associated to the operation is syntactically invalid"),
    "BadRequestData": (400, "The request includes input data which does not meet the requirements"),
    "AlreadyExists": (409, "The referred element already exists"),
    "OperationNotSupported": (422, "The operation is not supported"),
    "ResourceNotFound": (404, "The referred resource has not been found"),
    "NonexistentTenant": (404, "The addressed tenant does not exist"),
    "InternalError": (500, "There has been an error during the operation execution"),
    "TooComplexQuery": (403, "The query is too complex and cannot be resolved"),
    "TooManyResults": (403, "The query involves too many results"),
    "LdContextNotAvailable": (504, "A remote JSON-LD @context cannot be retrieved"),
    "NoMultiTenantSupport": (501, "The system does not support multiple tenants"),
    "NotImplemented": (501, "The operation is not implemented"),
    "LoopDetected": (508, "The request was already forwarded by this broker (Via), a distributed operation loop"),
    "PayloadTooLarge": (413, "The request body is too large"),
    "Unauthorized": (401, "Authentication is required"),
    "Forbidden": (403, "The credentials do not grant this operation"),
}
"""Short error type → (HTTP status, title); the NGSI-LD ones plus the HTTP ones we need."""


class NgsiError(Exception):
    """An NGSI-LD error that maps to one ProblemDetails response."""

    def __init__(self, type: str, detail: str, status: int | None = None, title: str | None = None) -> None:
        known = PROBLEM_TYPES.get(type, (500, type))
        self.type = type
        self.status = status if status is not None else known[0]
        self.title = title if title is not None else known[1]
        self.detail = detail
        super().__init__(f"{type}: {detail}")

    @property
    def type_uri(self) -> str:
        """The full error type URI."""
        return self.type if ":" in self.type else ERROR_BASE + self.type

    def to_problem_details(self) -> dict[str, Any]:
        """The ProblemDetails JSON object (RFC 7807) for this error."""
        return {"type": self.type_uri, "title": self.title, "detail": self.detail, "status": self.status}


def problem(type: str, detail: str, status: int | None = None) -> NgsiError:
    """Build an NgsiError of the given short type (e.g. ``"BadRequestData"``)."""
    return NgsiError(type, detail, status)


def bad_request(detail: str) -> NgsiError:
    """BadRequestData 400: the data is wrong."""
    return NgsiError("BadRequestData", detail)


def invalid_request(detail: str) -> NgsiError:
    """InvalidRequest 400: the request itself is malformed."""
    return NgsiError("InvalidRequest", detail)


def not_found(detail: str) -> NgsiError:
    """ResourceNotFound 404."""
    return NgsiError("ResourceNotFound", detail)


def not_implemented(detail: str) -> NgsiError:
    """NotImplemented 501 for a feature this store does not provide."""
    return NgsiError("NotImplemented", detail)
