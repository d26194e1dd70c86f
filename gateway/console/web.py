"""The console's routes and their wiring (see :mod:`gateway.console`)."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from gateway import __version__
from gateway.console.auth import Sessions, language, login_form, login_handler, logout_handler, session_middleware
from gateway.console.conformance import Conformance, conformance_ctx
from gateway.console.conformance import routes as conformance_routes
from gateway.console.overview import Sampler, overview_handler, sampler_ctx
from gateway.crosssite import HostPolicy
from gateway.home import Link
from gateway.problems import problem_response
from gateway.runtime.config import GatewayConfig
from gateway.units import UNECE_CODES, UNIT_ALIASES

STATIC: Final = Path(__file__).parent / "static"
"""The console's assets, served under ``/console/static/``."""

CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'self'; "
              "base-uri 'none'")
"""Content-Security-Policy of console responses: nothing but this server, no inline script or style."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def unit_symbols() -> dict[str, str]:
    """UN/CEFACT code -> the symbol shown beside a value (the unit's name when it has no symbol)."""
    symbols: dict[str, str] = {}
    for alias, code in UNIT_ALIASES.items():
        current = symbols.get(code)
        # the first alias is the common one; a superscript form (m³) reads better than m3
        if current is None or (any(c in alias for c in "²³") and not any(c in current for c in "²³")):
            symbols[code] = alias
    return {code: symbols.get(code, name) for code, name in UNECE_CODES.items()}


@dataclass
class Console:
    """What one console serves: its mode, the APIs it reads and who may open it."""

    mode: str
    """``gateway`` (jonction run) or ``store`` (jonction store)."""
    title: str
    links: Sequence[Link]
    sessions: Sessions
    ngsi_base: str | None
    """Base path of the NGSI-LD API, None when this process serves none."""
    tenants: Sequence[str] = ("",)
    outlines: Path | None = None
    """Operator-supplied GeoJSON outlines drawn under the map (already validated)."""
    conformance_target: str = ""
    """The target the conformance page proposes (this gateway's own NGSI-LD API)."""


_NAV: Final = {
    "en": {"overview": "Overview", "deadletters": "Dead letters", "entities": "Entities", "map": "Map",
           "conformance": "Conformance", "devices": "Devices", "logout": "Log out", "apis": "APIs served here",
           "pages": "Console pages", "loading": "Loading…"},
    "fr": {"overview": "Vue d\u2019ensemble", "deadletters": "Lettres mortes", "entities": "Entités", "map": "Carte",
           "conformance": "Conformité", "devices": "Capteurs", "logout": "Se déconnecter", "apis": "API servies ici",
           "pages": "Pages de la console", "loading": "Chargement…"},
}


def _shell(console: Console, lang: str) -> str:
    text = _NAV[lang]
    pages = ["overview", "deadletters"] if console.mode == "gateway" else []
    if console.ngsi_base:
        pages += ["entities", "map"]
    if console.mode == "gateway":
        pages += ["devices", "conformance"]
    items = "".join(f'<li><a href="#/{p}">{text[p]}</a></li>' for p in pages)
    apis = "\n".join(
        f'<li><a href="{html.escape(link.href)}">{html.escape(link.title)}</a> — {html.escape(link.what)}</li>'
        for link in console.links)
    logout = ('<form method="post" action="/console/logout" class="logout">'
              f'<button type="submit">{text["logout"]}</button></form>') if console.sessions.required else ""
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(console.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/console/static/console.css">
<link rel="icon" href="/console/static/icon.svg" type="image/svg+xml">
<script type="module" src="/console/static/app.js"></script>
</head><body data-mode="{console.mode}" data-ngsi="{html.escape(console.ngsi_base or '')}">
<header><span class="brand">{html.escape(console.title)}</span><nav aria-label="{text["pages"]}"><ul>{items}</ul></nav>
{logout}</header>
<main id="view" tabindex="-1"><p>{text["loading"]}</p></main>
<footer><details><summary>{text["apis"]} (jonction {html.escape(__version__)})</summary><ul>
{apis}
</ul></details></footer>
</body></html>
"""


def _index(console: Console) -> Handler:
    pages = {lang: _shell(console, lang).encode() for lang in _NAV}
    as_json = {"name": "jonction", "version": __version__,
               "links": [{"href": link.href, "title": link.title, "description": link.what}
                         for link in console.links]}

    async def index(request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        if "json" in accept and "text/html" not in accept:
            return web.json_response(as_json)  # the API links, for scripts (public, as before)
        if not console.sessions.authorized(request):
            raise web.HTTPSeeOther("/console/login")
        return web.Response(body=pages[language(request)], content_type="text/html", charset="utf-8",
                            headers={"Vary": "Accept-Language, Cookie"})

    return index


def _guarded(console: Console, handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not console.sessions.authorized(request):
            return problem_response(401, "Unauthorized", "log in to the console (or send the bearer token)")
        return await handler(request)

    return guarded


def _info(console: Console) -> Handler:
    units = unit_symbols()

    async def info(request: web.Request) -> web.Response:  # noqa: ARG001  # aiohttp handler signature
        return web.json_response({"mode": console.mode, "ngsi": console.ngsi_base, "tenants": list(console.tenants),
                                  "units": units, "outlines": console.outlines is not None,
                                  "conformanceTarget": console.conformance_target,
                                  "auth": console.sessions.required})

    return info


def _outlines(console: Console) -> Handler:
    async def outlines(request: web.Request) -> web.Response:  # noqa: ARG001  # aiohttp handler signature
        if console.outlines is None:
            return web.json_response({"type": "FeatureCollection", "features": []})
        return web.Response(body=console.outlines.read_bytes(), content_type="application/geo+json")

    return outlines


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    path = request.path
    if path == "/" or path.startswith("/console/"):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on the login form
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if path == "/" or path == "/console/login":
            response.headers.setdefault("Cache-Control", "no-store")


def _mount(app: web.Application, console: Console, extra: Callable[[web.Application], None] | None = None) -> None:
    # Before every other middleware: the admin and store checks see the session's bearer token.
    app.middlewares.insert(0, session_middleware(console.sessions))
    app.on_response_prepare.append(_security_headers)
    r = app.router
    r.add_get("/", _index(console))
    r.add_get("/console/login", login_form)
    r.add_post("/console/login", login_handler(console.sessions))
    r.add_post("/console/logout", logout_handler(console.sessions))
    r.add_get("/console/api/info", _guarded(console, _info(console)))
    r.add_get("/console/api/outlines", _guarded(console, _outlines(console)))
    r.add_static("/console/static", STATIC, append_version=False)
    if extra is not None:
        extra(app)


def mount_gateway(app: web.Application, config: GatewayConfig, *, links: Sequence[Link], policy: HostPolicy) -> None:
    """Serve the console of ``jonction run`` at ``/`` (overview, dead letters, entities, map)."""
    tenants = {"", *(s.tenant for s in config.sources), *(r.tenant for s in config.sources for r in s.routes),
               *(config.embedded_tenants or ())}
    sessions = Sessions(frozenset({config.admin_token} if config.admin_token else ()), policy)
    console = Console("gateway", "jonction gateway", links, sessions, "/ngsi-ld/v1" if config.embedded else None,
                      sorted(tenants), config.console_outlines,
                      config.base_url + "/ngsi-ld/v1" if config.embedded else "")
    sampler = Sampler()
    conf = Conformance(config.data_dir / "conformance")

    def extra(app: web.Application) -> None:
        app.router.add_get("/console/api/overview", _guarded(console, overview_handler(sampler)))
        app.cleanup_ctx.append(sampler_ctx(sampler))
        app.router.add_routes(conformance_routes(conf, lambda h: _guarded(console, h), sessions.refusal))
        app.cleanup_ctx.append(conformance_ctx(conf))

    _mount(app, console, extra)


def mount_store(
    app: web.Application,
    *,
    title: str,
    links: Sequence[Link],
    tokens: frozenset[str],
    policy: HostPolicy,
    ngsi_base: str,
) -> None:
    """Serve the console of ``jonction store`` at ``/`` (entities, map, history)."""
    _mount(app, Console("store", title, links, Sessions(tokens, policy), ngsi_base))
