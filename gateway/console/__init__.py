"""The operator console: a web page at ``/`` showing sources, sinks, dead letters, entities and a map.

Static HTML, CSS and JavaScript modules from ``gateway/console/static`` (no build step, nothing
fetched from elsewhere: the gateway is offline by design), reading the admin and NGSI-LD APIs from
the page, plus a few console endpoints under ``/console/api/`` for what those APIs do not say
(message rates over time, tenants, unit symbols, map outlines). Same authentication as the admin
API (:mod:`gateway.console.auth`), a strict Content-Security-Policy on every console response.

``mount_gateway`` (``jonction run``) and ``mount_store`` (``jonction store``: entities, map and
history only) are the two calls the applications make.
"""
