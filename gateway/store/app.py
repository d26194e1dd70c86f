"""The embedded NGSI-LD store as an aiohttp application (mountable under ``/ngsi-ld/v1``).

Wiring lives here only. ``create_store_app(settings)`` builds the sub-application: middlewares
(ProblemDetails errors, tenant echo, bearer tokens), the entity, batch, discovery and
@context routes, subscriptions (``gateway.store.subscriptions``) and the temporal API
(``gateway.store.temporal``).

Who owns the storage is explicit:

* an application that shares it (the gateway: its runtime writes through it) creates it, starts
  and closes it, and hands it over: ``create_store_app(settings, storage=storage)`` — the store
  app then never opens nor closes it;
* without ``storage`` (``jonction store``, tests) the store app creates its own, opened and
  closed in its ``cleanup_ctx``.

``create_root_app(settings)`` mounts the sub-app at ``settings.base_path`` for ``jonction store``.
A root application of your own should be built with ``handler_args=HANDLER_ARGS`` so that long
``q``/``geoQ`` query strings reach the API's own limits (TooComplexQuery) instead of aiohttp's
bare 400 for request lines over 8 KiB.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from gateway import home
from gateway.console.web import mount_store
from gateway.crosssite import HostPolicy
from gateway.store.api import add_entity_routes
from gateway.store.audit import add_audit_routes
from gateway.store.backends import create_storage
from gateway.store.base import Storage, tune_gc
from gateway.store.batch import add_batch_routes
from gateway.store.csource_subscriptions import setup_csource_subscriptions
from gateway.store.discovery import add_discovery_routes
from gateway.store.federation import federation_middleware, setup_federation
from gateway.store.http import error_middleware, negotiate
from gateway.store.problems import NgsiError
from gateway.store.readers import sharing_middleware
from gateway.store.registrations import add_registration_routes
from gateway.store.security import auth_middleware, cross_site_middleware
from gateway.store.settings import CONTEXTS_KEY, SETTINGS_KEY, STORAGE_KEY, StoreSettings, load_tokens
from gateway.store.subscriptions import setup_subscriptions
from gateway.store.temporal import setup_temporal

__all__ = [
    "CONTEXTS_KEY",
    "HANDLER_ARGS",
    "SETTINGS_KEY",
    "STORAGE_KEY",
    "StoreSettings",
    "create_root_app",
    "create_store_app",
    "load_tokens",
]

log = logging.getLogger("jonction.store")

HANDLER_ARGS: dict[str, Any] = {"max_line_size": 65536, "max_field_size": 16384}
"""Give the ROOT app ``web.Application(handler_args=HANDLER_ARGS)``: long q/geoQ query strings then
reach the API (which answers TooComplexQuery past its own limits) instead of aiohttp's bare 400."""


def create_store_app(settings: StoreSettings, *, storage: Storage | None = None) -> web.Application:
    """The NGSI-LD sub-application; opens ``settings.store_path`` unless ``storage`` is given."""
    settings.check()
    middlewares: list[Any] = [error_middleware, cross_site_middleware(settings)]
    if settings.sharing is not None:
        middlewares.append(sharing_middleware(settings))
    if settings.requires_auth:
        middlewares.append(auth_middleware(settings))
    middlewares.append(federation_middleware)  # innermost: after authentication, errors become ProblemDetails
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    owned = storage is None
    store: Storage = storage if storage is not None else create_storage(
        settings.database_url, durability=settings.durability
    )
    app[SETTINGS_KEY] = settings
    app[STORAGE_KEY] = store
    app[CONTEXTS_KEY] = store.contexts

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:  # noqa: ARG001  # cleanup_ctx signature
        if owned:
            tune_gc()
            await store.start()
        try:
            yield
        finally:
            if owned:
                await store.close()

    # First in cleanup_ctx: the storage is open before, and closed after, what others set up.
    app.cleanup_ctx.append(lifecycle)
    add_entity_routes(app)
    add_batch_routes(app)
    add_discovery_routes(app)
    setup_subscriptions(app, store)
    setup_temporal(app, store)
    add_registration_routes(app)
    setup_csource_subscriptions(app)
    setup_federation(app, settings)
    add_audit_routes(app)  # federated reads are audited with or without a sharing policy
    # Entity maps and broker info are outside what this store implements.
    for prefix in ("/entityMaps", "/info"):
        _not_implemented(app, prefix)
    _accept_trailing_slash(app)
    return app


def _accept_trailing_slash(app: web.Application) -> None:
    """Serve every resource with a trailing slash too: CIM 009 writes ``/entities/`` in its tables.

    Clients (the ETSI suite, FiLiP) send that form; a 404 or a redirect (which drops the body of a
    POST in many clients) would make the store unusable to them.
    """
    for resource in list(app.router.resources()):
        path = resource.canonical
        if path.endswith("/") or path.endswith("{tail:.*}"):
            continue
        for route in list(resource):
            app.router.add_route(route.method, path + "/", route.handler)


def _not_implemented(app: web.Application, prefix: str) -> None:
    """Answer 501 NotImplemented (ProblemDetails) under ``prefix`` when its module is absent."""

    async def handler(request: web.Request) -> web.Response:
        if request.method == "GET":
            negotiate(request)  # §6.3.4 holds on every endpoint: an unacceptable Accept is 406 first
        raise NgsiError("NotImplemented", f"{prefix} is not available in this build of the store")

    app.router.add_route("*", prefix, handler)
    app.router.add_route("*", prefix + "/{tail:.*}", handler)


def create_root_app(settings: StoreSettings, *, storage: Storage | None = None) -> web.Application:
    """A root application with the store mounted at ``settings.base_path``."""
    root = web.Application(client_max_size=settings.max_body_bytes, handler_args=HANDLER_ARGS)
    mount_store(root, title="jonction NGSI-LD store", links=home.ngsi_links(settings.base_path), tokens=settings.tokens,
                policy=HostPolicy.of(settings.host, settings.allowed_hosts), ngsi_base=settings.base_path)
    root.add_subapp(settings.base_path, create_store_app(settings, storage=storage))
    return root
