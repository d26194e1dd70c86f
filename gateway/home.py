"""The page at ``/``: where a newcomer lands, with links to every API the process serves.

A plain, self-contained HTML page (no script, no external asset: the gateway is offline by design)
or, for a client that asks for JSON, the same links as a JSON object.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway import __version__


@dataclass(frozen=True, slots=True)
class Link:
    """One entry of the landing page."""

    href: str
    title: str
    what: str


def ngsi_links(base: str) -> list[Link]:
    """The NGSI-LD entries, under the API's base path (``/ngsi-ld/v1`` by default)."""
    return [
        Link(f"{base}/entities?type=WasteContainer", "NGSI-LD API",
             "entities, batch operations, subscriptions, temporal history (ETSI GS CIM 009 V1.9.1); "
             "short type names need the Link header of their @context, or give full IRIs"),
        Link(f"{base}/types", "Entity types", "the types the store holds, per tenant (NGSILD-Tenant header)"),
        Link(f"{base}/jsonldContexts", "@contexts", "the @context documents the store hosts"),
    ]


ADMIN_LINKS: tuple[Link, ...] = (
    Link("/admin/sources", "Sources", "each adapter instance: state, last message, dead letters (admin API)"),
    Link("/admin/sinks", "Sinks", "outbox depth and breaker state per sink (admin API)"),
    Link("/admin/deadletters", "Dead letters", "rejected messages with the reason, replayable (admin API)"),
    Link("/admin/openapi.json", "Admin API description", "OpenAPI description of the admin API"),
    Link("/metrics", "Metrics", "Prometheus text format"),
    Link("/healthz", "Liveness", "the process answers"),
    Link("/readyz", "Readiness", "storage, sinks and sources"),
)
"""What ``jonction run`` serves besides the NGSI-LD API."""


def _page(title: str, links: Sequence[Link]) -> str:
    rows = "\n".join(
        f'<li><a href="{html.escape(link.href)}">{html.escape(link.title)}</a> '
        f"<code>{html.escape(link.href)}</code><br><span>{html.escape(link.what)}</span></li>"
        for link in links
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1d2433}}
h1{{font-size:1.5rem}}li{{margin:.6rem 0}}span{{color:#555;font-size:.92rem}}
code{{margin-left:.4rem;color:#555}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>jonction {html.escape(__version__)} — interoperability gateway for connected territories.
Command-line help: <code>jonction --help</code>.</p>
<ul>
{rows}
</ul></body></html>
"""


def landing_handler(title: str, links: Sequence[Link]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler for ``GET /`` answering HTML, or JSON when the client prefers it."""
    page = _page(title, links).encode()
    as_json = {"name": "jonction", "version": __version__,
               "links": [{"href": link.href, "title": link.title, "description": link.what} for link in links]}

    async def index(request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        if "json" in accept and "text/html" not in accept:
            return web.json_response(as_json)
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    return index
