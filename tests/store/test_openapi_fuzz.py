"""The store's NGSI-LD API fuzzed from its OpenAPI description (schemathesis) against a live ``jonction store``.

Every generated request must get an answer (no hang: a 10 s timeout per request) that is not a 5xx,
and the server log must hold no traceback. Subscriptions are only generated with valid bodies, whose
notification endpoint is pinned to a closed loopback port, so that nothing leaves this machine.
``JONCTION_FUZZ_SCALE`` multiplies the examples per operation (``make fuzz``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, free_port

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (the `test` extra) is not installed")

from schemathesis.generation import GenerationMode  # noqa: E402

pytestmark = pytest.mark.fuzz

SCALE = max(1, int(os.environ.get("JONCTION_FUZZ_SCALE", "1")))
EXAMPLES = 10 * SCALE
"""Examples per operation (and the explicit ones): about 600 requests over 41 operations, well under a
minute on a loaded 2-core machine."""
OPENAPI = Path(str(files("gateway.store").joinpath("openapi.yaml")))
SEED = [
    {"id": "urn:ngsi-ld:Streetlight:fuzz-1", "type": "Streetlight",
     "powerState": {"type": "Property", "value": "on", "observedAt": "2026-01-01T10:00:00Z"},
     "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]}},
     "name": {"type": "LanguageProperty", "languageMap": {"fr": "rue", "en": "street"}}},
    {"id": "urn:ngsi-ld:Streetlight:fuzz-2", "type": "Streetlight",
     "powerState": {"type": "Property", "value": "off"},
     "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Streetlight:fuzz-1"}},
]


def _send(method: str, url: str, body: Any) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


@pytest.fixture(scope="module")
def live_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``jonction store`` on loopback, seeded with entities, history and a subscription."""
    folder = tmp_path_factory.mktemp("openapi-fuzz")
    port = free_port()
    log_path = folder / "store.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "store", "--host", "127.0.0.1", "--port", str(port),
             "--data", str(folder / "data"), "--durability", "normal"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while "serving NGSI-LD" not in log_path.read_text(errors="replace"):
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
                time.sleep(0.05)
            api = base + "/ngsi-ld/v1"
            assert _send("POST", api + "/entityOperations/upsert", SEED) in (201, 204)
            history = {"id": "urn:ngsi-ld:Streetlight:fuzz-1", "type": "Streetlight", "powerState": [
                {"type": "Property", "value": "off", "observedAt": "2026-01-01T09:00:00Z"}]}
            assert _send("POST", api + "/temporal/entities", history) in (201, 204)
            assert _send("POST", api + "/subscriptions", {
                "id": "urn:ngsi-ld:Subscription:fuzz-1", "type": "Subscription",
                "entities": [{"type": "Streetlight"}],
                "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}}) == 201
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text and "unexpected error" not in text, text[-5000:]


def _schema(base: str, modes: list[GenerationMode]) -> Any:
    schema = schemathesis.openapi.from_path(str(OPENAPI))
    schema.config.update(base_url=base + "/ngsi-ld/v1", request_timeout=10)
    schema.config.generation.update(modes=modes, max_examples=EXAMPLES, no_shrink=True, database="none",
                                    deterministic=SCALE == 1, allow_x00=False)
    return schema


@pytest.fixture(scope="module")
def store_schema(live_store: str) -> Any:
    """Valid and invalid requests for every operation but subscriptions."""
    return _schema(live_store, [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def subscription_schema(live_store: str) -> Any:
    """Valid requests only: an invalid subscription body could name an endpoint beyond loopback."""
    return _schema(live_store, [GenerationMode.POSITIVE])


EXPECTED_5XX = {501: "NotImplemented", 504: "LdContextNotAvailable"}
"""Server-side statuses CIM 009 gives a meaning: a feature this store lacks, a @context it will not fetch."""


def _no_5xx(case: Any) -> None:
    response = case.call(timeout=10)
    expected = EXPECTED_5XX.get(response.status_code)
    if expected is not None:
        assert json.loads(response.text)["type"].endswith("/" + expected), response.text[:500]
        return
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} query={case.query} headers={case.headers} body={case.body!r}"
        f" -> {response.status_code} {response.text[:500]}"
    )


store_api = schemathesis.pytest.from_fixture("store_schema").exclude(path_regex="^/(csourceS|s)ubscriptions")
subscription_api = schemathesis.pytest.from_fixture("subscription_schema").include(
    path_regex="^/(csourceS|s)ubscriptions")


@store_api.parametrize()
def test_store_api_never_answers_5xx(case: Any) -> None:
    _no_5xx(case)


@subscription_api.parametrize()
def test_subscription_api_never_answers_5xx(case: Any) -> None:
    _no_5xx(case)


def test_the_description_covers_every_route() -> None:
    """Every route the store serves is described (a new route without a description fails here)."""
    from gateway.store.app import StoreSettings, create_store_app

    doc = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    assert doc["openapi"].startswith("3.")
    described = {(method.upper(), path) for path, item in doc["paths"].items() for method in item
                 if method in ("get", "post", "put", "patch", "delete")}
    app = create_store_app(StoreSettings(data_dir=ROOT / "never-opened"))
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "*" or path.endswith("/") or route.method == "HEAD":
            continue  # 501 placeholders, trailing-slash aliases, aiohttp's implicit HEAD
        served.add((route.method, path))
    assert served - described == set(), "routes without an OpenAPI description"
    assert described - served == set(), "described operations the store does not serve"
