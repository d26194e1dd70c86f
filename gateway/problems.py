"""One writer of problem-details responses (RFC 9457) for every HTTP surface jonction serves.

The embedded store writes NGSI-LD ProblemDetails (``application/json``, CIM 009 §5.5.2) through
:func:`write_problem`; the admin API and the push receivers write ``about:blank`` problems
(``application/problem+json``) through :func:`problem_response` or raise :func:`problem_error`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

PROBLEM_JSON: Final = "application/problem+json"
"""The media type of a problem-details document (RFC 9457 §3)."""

_ERRORS: Final[Mapping[int, type[web.HTTPError]]] = {
    cls.status_code: cls
    for cls in (web.HTTPBadRequest, web.HTTPUnauthorized, web.HTTPForbidden, web.HTTPNotFound,
                web.HTTPConflict, web.HTTPRequestEntityTooLarge, web.HTTPUnprocessableEntity,
                web.HTTPTooManyRequests, web.HTTPInternalServerError, web.HTTPServiceUnavailable)
}


def problem_details(status: int, title: str, detail: str | None = None, *, type: str = "about:blank") -> dict[str, Any]:
    """The problem-details object, members in RFC 9457 order; ``detail`` left out when None."""
    doc: dict[str, Any] = {"type": type, "title": title, "status": status}
    if detail is not None:
        doc["detail"] = detail
    return doc


def _text(document: Mapping[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False)


def write_problem(document: Mapping[str, Any], status: int, *, content_type: str = PROBLEM_JSON) -> web.Response:
    """A response carrying ``document`` (already built) with ``status``."""
    return web.Response(body=_text(document).encode(), status=status, content_type=content_type)


def problem_response(status: int, title: str, detail: str | None = None, *, type: str = "about:blank") -> web.Response:
    """An ``application/problem+json`` response."""
    return write_problem(problem_details(status, title, detail, type=type), status)


def problem_error(status: int, title: str, detail: str | None = None) -> web.HTTPError:
    """The same problem as an exception, for code that must raise out of a handler."""
    cls = _ERRORS.get(status, web.HTTPInternalServerError)
    return cls(text=_text(problem_details(status, title, detail)), content_type=PROBLEM_JSON)
