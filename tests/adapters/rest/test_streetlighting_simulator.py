"""The simulated street-lighting vendor: OAuth2, pagination, incremental filter, night dimming."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import aiohttp

from adapters.kit.simulators.streetlighting import create, luminaire
from adapters.rest_mapping.auth import OAuth2ClientCredentials


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_values_follow_the_night() -> None:
    evening, late, day = (luminaire(0, _at(t)) for t in ("2025-01-15T19:30:00", "2025-01-15T01:30:00",
                                                          "2025-01-15T12:00:00"))
    assert (evening["estado"], evening["nivelRegulacion"]) == ("ENCENDIDA", 100)
    assert (late["estado"], late["nivelRegulacion"]) == ("ENCENDIDA", 50)
    assert (day["estado"], day["nivelRegulacion"]) == ("APAGADA", 0)
    assert luminaire(7, _at("2025-01-15T01:30:00"))["estado"] == "AVERIA"
    assert day["energiaConsumida"] > late["energiaConsumida"]  # energy only grows
    assert late["ultimaLectura"].endswith("+01:00")  # local time, winter offset
    assert luminaire(0, _at("2025-07-15T01:30:00"))["ultimaLectura"].endswith("+02:00")


async def test_token_pages_and_incremental_filter() -> None:
    sim = create({"count": 12, "page_size": 5})
    await sim.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = f"{sim.url}/api/v1/luminarias"
            async with http.get(api) as resp:
                assert resp.status == 401
            form = {"grant_type": "client_credentials", "client_id": "jonction-demo", "client_secret": "nope"}
            async with http.post(f"{sim.url}/oauth/token", data=form) as resp:
                assert resp.status == 401
            form["client_secret"] = "demo-secret"
            async with http.post(f"{sim.url}/oauth/token", data=form) as resp:
                token = (await resp.json())["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            async with http.get(api, params={"pagina": "3"}, headers=auth) as resp:
                page = await resp.json()
            assert page["totalPaginas"] == 3 and len(page["luminarias"]) == 2
            latest = max(sim.luminarias(), key=lambda r: datetime.fromisoformat(r["ultimaLectura"]))
            async with http.get(api, params={"desde": latest["ultimaLectura"]}, headers=auth) as resp:
                assert (await resp.json())["total"] == 0
            async with http.get(api, params={"tamano": "0"}, headers=auth) as resp:
                assert resp.status == 400
    finally:
        await sim.stop()
        await sim.stop()


async def test_token_is_renewed_before_it_expires() -> None:
    sim = create({"token_ttl": 0.2})
    await sim.start()
    try:
        auth = OAuth2ClientCredentials({"token_url": f"{sim.url}/oauth/token", "client_id": "jonction-demo",
                                        "client_secret": "demo-secret"}, timeout=5)
        async with aiohttp.ClientSession() as http:
            headers: dict[str, str] = {}
            await auth.apply(http, headers, {})
            first = headers["Authorization"]
            # Renewal is due at half the lifetime of such a short token; wait until then.
            await asyncio.sleep(max(0.0, auth._expires - time.monotonic()) + 0.01)
            await auth.apply(http, headers, {})
            assert headers["Authorization"] != first
            async with http.get(f"{sim.url}/api/v1/luminarias", headers=headers) as resp:
                assert resp.status == 200
        assert auth.tokens_fetched == 2 and sim.stats["rejected_tokens"] == 0
    finally:
        await sim.stop()
