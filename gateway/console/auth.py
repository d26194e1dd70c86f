"""Console sessions: a login form taking the admin token, kept as an opaque HttpOnly, SameSite=Strict cookie.

The cookie holds a random session id, never the token; the id maps to the token in memory (a
restart logs everyone out). A request carrying a valid session cookie and no ``Authorization``
header is handed on with ``Authorization: Bearer <token>``, so the admin and NGSI-LD APIs check it
exactly as they check any client: one authentication, not two. Cross-site use of the cookie is
refused twice: the browser does not send a SameSite=Strict cookie cross-site, and the admin API's
guard (:mod:`gateway.crosssite`) refuses foreign ``Origin``/``Host`` and non-JSON writes.
"""

from __future__ import annotations

import hmac
import html
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

from gateway.crosssite import HostPolicy, refusal

COOKIE: Final = "jonction_console"
"""Name of the session cookie."""
SESSION_TTL_S: Final = 12 * 3600.0
"""A session lasts a working day; the operator logs in again after."""
MAX_SESSIONS: Final = 1000
"""Oldest sessions are dropped past this many (a flood of logins cannot grow memory)."""
MAX_LOGIN_BODY: Final = 4096

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Sessions:
    """Accepted tokens and the live sessions (session id -> token, expiry)."""

    tokens: frozenset[str]
    """Tokens that open a session (the admin token; a store's tokens). Empty: no login needed."""
    policy: HostPolicy
    """Host names the console answers to (checked on login and logout, like admin writes)."""
    live: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        """True when a token is configured, so that pages and data need a session."""
        return bool(self.tokens)

    def accepts(self, token: str) -> bool:
        """True when ``token`` is one of the configured tokens (constant-time compare with each)."""
        given = token.encode()
        found = False
        for expected in self.tokens:
            found |= hmac.compare_digest(given, expected.encode())
        return found

    def open(self, token: str) -> str:
        """A new session id for ``token`` (already checked)."""
        now = time.time()
        for sid in [s for s, (_, exp) in self.live.items() if exp < now]:
            del self.live[sid]
        while len(self.live) >= MAX_SESSIONS:
            del self.live[next(iter(self.live))]
        sid = secrets.token_urlsafe(32)
        self.live[sid] = (token, now + SESSION_TTL_S)
        return sid

    def token_of(self, request: web.Request) -> str | None:
        """The token of the request's session cookie, None when absent, unknown or expired."""
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        entry = self.live.get(sid)
        if entry is None:
            return None
        if entry[1] < time.time():
            self.live.pop(sid, None)
            return None
        return entry[0]

    def close(self, request: web.Request) -> None:
        """Forget the request's session."""
        sid = request.cookies.get(COOKIE)
        if sid:
            self.live.pop(sid, None)

    def authorized(self, request: web.Request) -> bool:
        """True when no token is configured, or the request has a session or a valid bearer token."""
        if not self.required:
            return True
        if self.token_of(request) is not None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.accepts(token.strip())

    def refusal(self, request: web.Request) -> str | None:
        """Why a login or logout must be refused as cross-site, or None."""
        return refusal(self.policy, host=request.headers.get("Host"), origin=request.headers.get("Origin"),
                       scheme=request.scheme, fetch_site=request.headers.get("Sec-Fetch-Site"))


def session_middleware(sessions: Sessions) -> Middleware:
    """Middleware handing a request with a valid session cookie on with the session's bearer token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if sessions.required and "Authorization" not in request.headers:
            token = sessions.token_of(request)
            if token is not None:
                headers = CIMultiDict(request.headers)
                headers["Authorization"] = f"Bearer {token}"
                request = request.clone(headers=headers)
        return await handler(request)

    return middleware


def language(request: web.Request) -> str:
    """``fr`` when the browser prefers French to English (``Accept-Language``), else ``en``."""
    best, best_q = "en", -1.0
    for item in request.headers.get("Accept-Language", "")[:1000].split(","):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if primary in ("fr", "en") and q > best_q:
            best, best_q = primary, q
    return best


_LOGIN_TEXT: Final = {
    "en": ("log in", "Admin token", "Log in",
           "The token is the gateway's <code>admin.token</code> (or a store token)."),
    "fr": ("connexion", "Jeton d'administration", "Se connecter",
           "Le jeton est l'<code>admin.token</code> de la passerelle (ou un jeton du store)."),
}


def _login_page(message: str = "", lang: str = "en") -> str:
    title, label, button, hint = _LOGIN_TEXT[lang]
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>jonction console — {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/console/static/console.css">
<link rel="icon" href="/console/static/icon.svg" type="image/svg+xml"></head>
<body class="login"><main>
<h1>jonction console</h1>
<form method="post" action="/console/login">
<label for="token">{label}</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">{button}</button>
</form>{note}
<p class="hint">{hint}</p>
</main></body></html>
"""


async def login_form(request: web.Request) -> web.Response:  # aiohttp handler signature
    """The login page (GET)."""
    return web.Response(text=_login_page(lang=language(request)), content_type="text/html")


def login_handler(sessions: Sessions) -> Handler:
    """POST /console/login: check the token, open a session, set the cookie, go to the console."""

    async def login(request: web.Request) -> web.StreamResponse:
        reason = sessions.refusal(request)
        if reason is not None:
            return web.Response(status=403, text=_login_page(reason, language(request)), content_type="text/html")
        if (request.content_length or 0) > MAX_LOGIN_BODY:
            return web.Response(status=413, text=_login_page("request too large", language(request)),
                                content_type="text/html")
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not sessions.required or not sessions.accepts(token.strip()):
            fr = language(request) == "fr"
            if not sessions.required:
                message = "aucun jeton configuré : la console est ouverte" if fr else \
                    "no token is configured: the console is open"
            else:
                message = "jeton incorrect" if fr else "wrong token"
            return web.Response(status=401, text=_login_page(message, language(request)), content_type="text/html")
        sid = sessions.open(token.strip())
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/", secure=request.secure,
                            max_age=int(SESSION_TTL_S))
        raise response

    return login


def logout_handler(sessions: Sessions) -> Handler:
    """POST /console/logout: forget the session and clear the cookie."""

    async def logout(request: web.Request) -> web.StreamResponse:
        reason = sessions.refusal(request)
        if reason is not None:
            return web.Response(status=403, text=_login_page(reason, language(request)), content_type="text/html")
        sessions.close(request)
        response = web.HTTPSeeOther("/console/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    return logout
