"""A simulated proprietary street-lighting vendor API (OAuth2, Spanish field names, Lambert-93).

It behaves like the central management systems French communes buy for their luminaires: an
OAuth2 client-credentials token endpoint with short-lived tokens, and a paginated list of
luminaires whose dimming, state and energy change with the time of night. It exists for the demo
territory and for the tests of the REST mapping adapter; it is the worked example of
docs/onboarding-a-vendor.md.
"""

from __future__ import annotations

import base64
import hmac
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

PARIS = ZoneInfo("Europe/Paris")
# Montpellier (INSEE 34172), around the Antigone district, in Lambert-93 (EPSG:2154) metres.
CENTRE_X, CENTRE_Y = 771_020.0, 6_279_310.0
COMMISSIONED = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
STREETS = ("Place du Nombre d'Or", "Avenue du Pirée", "Rue de Thèbes", "Boulevard d'Antigone", "Esplanade de l'Europe")
MODELS = (("LED-40", 40), ("LED-60", 60), ("LED-90", 90))


@dataclass
class SimulatorSettings:
    """Settings of one simulated vendor platform (every field has a demo default)."""

    host: str = "127.0.0.1"
    port: int = 0
    client_id: str = "jonction-demo"
    client_secret: str = "demo-secret"
    token_ttl: float = 300.0
    token_max_uses: int | None = None
    count: int = 24
    page_size: int = 10
    max_page_size: int = 100
    reading_period: int = 600
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> SimulatorSettings:
        """Build settings from a plain mapping, ignoring unknown keys."""
        known = {k: v for k, v in (config or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class _Token:
    expires_at: float
    uses: int = 0


def luminaire(index: int, now: float, period: int = 600) -> dict[str, Any]:
    """The state of luminaire ``index`` at POSIX time ``now`` (deterministic)."""
    model, watts = MODELS[index % len(MODELS)]
    # Readings are taken every `period` seconds, staggered per luminaire.
    stagger = (index * 37) % period
    taken = math.floor((now - stagger) / period) * period + stagger
    local = datetime.fromtimestamp(taken, tz=PARIS)
    hour = local.hour + local.minute / 60
    broken = index % 11 == 7
    if broken:
        state, level = "AVERIA", 0
    elif hour >= 19 or hour < 7:
        state = "ENCENDIDA"
        # Night dimming: full power in the evening, half after 23:00, 80 % before dawn.
        level = 100 if hour >= 19 else 50 if hour < 5 else 80
    else:
        state, level = "APAGADA", 0
    # About 11 h of light a night at an average 75 % since commissioning.
    hours_on = max(0.0, taken - COMMISSIONED) / 3600 * (11 / 24) * 0.75
    energy_wh = int(hours_on * watts) + index * 13
    column, row = index % 6, index // 6
    return {
        "identificador": f"LUM-{index + 1:04d}",
        "municipio": "34172",
        "calle": STREETS[index % len(STREETS)],
        "coordenadas": {"x": round(CENTRE_X + column * 35.5, 2), "y": round(CENTRE_Y + row * 28.25, 2)},
        "modelo": model,
        "potenciaNominal": watts,
        "circuito": f"CM-{index // 8 + 1:02d}",
        "estado": state,
        "nivelRegulacion": level,
        "energiaConsumida": energy_wh,
        "ultimaLectura": local.isoformat(),
    }


class StreetlightingSimulator:
    """The aiohttp application of the simulated vendor; ``create`` builds one."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.url = ""
        self.stats: dict[str, int] = {"tokens_issued": 0, "pages_served": 0, "rejected_tokens": 0}
        self._tokens: dict[str, _Token] = {}
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on the configured host and port (0 picks a free one; see ``url``)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/api/v1/luminarias", self._luminarias)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.settings.host}:{port}"

    async def stop(self) -> None:
        """Stop listening; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------------ data

    def luminarias(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every luminaire's current state, ordered by identifier."""
        moment = self.settings.clock() if now is None else now
        return [luminaire(i, moment, self.settings.reading_period) for i in range(self.settings.count)]

    # ------------------------------------------------------------------ handlers

    def _client_ok(self, request: web.Request, form: Mapping[str, str]) -> bool:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
        return hmac.compare_digest(client_id, self.settings.client_id) and hmac.compare_digest(
            secret, self.settings.client_secret
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        if fields.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if not self._client_ok(request, fields):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        now = self.settings.clock()
        # Forget expired tokens so the table stays small.
        self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at > now}
        self._tokens[token] = _Token(expires_at=now + self.settings.token_ttl)
        self.stats["tokens_issued"] += 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.settings.token_ttl}
        )

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = self._tokens.get(header[7:]) if header.startswith("Bearer ") else None
        if token is None or token.expires_at <= self.settings.clock():
            return False
        limit = self.settings.token_max_uses
        if limit is not None and token.uses >= limit:
            return False
        token.uses += 1
        return True

    async def _luminarias(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            self.stats["rejected_tokens"] += 1
            return web.json_response(
                {"error": "invalid_token", "mensaje": "token caducado o desconocido"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        try:
            page = int(request.query.get("pagina", "1"))
            size = int(request.query.get("tamano", str(self.settings.page_size)))
            since = datetime.fromisoformat(request.query["desde"]) if "desde" in request.query else None
        except ValueError:
            return web.json_response({"error": "parametro_invalido"}, status=400)
        if page < 1 or not 1 <= size <= self.settings.max_page_size:
            return web.json_response({"error": "parametro_invalido"}, status=400)
        rows = self.luminarias()
        if since is not None:
            if since.tzinfo is None:
                since = since.replace(tzinfo=PARIS)
            rows = [r for r in rows if datetime.fromisoformat(r["ultimaLectura"]) > since]
        total_pages = max(1, math.ceil(len(rows) / size))
        chunk = rows[(page - 1) * size : page * size]
        self.stats["pages_served"] += 1
        return web.json_response(
            {"pagina": page, "tamanoPagina": size, "totalPaginas": total_pages, "total": len(rows),
             "luminarias": chunk}
        )


def create(config: Mapping[str, Any] | None = None) -> StreetlightingSimulator:
    """Build (not start) a simulator; ``await sim.start()`` then read ``sim.url``."""
    return StreetlightingSimulator(SimulatorSettings.from_config(config))
