"""A simulated ChirpStack v4 network server posting uplinks to an HTTP integration (demo and tests).

Devices: Milesight EM310-UDL sensors on waste containers (the fill level drifts up at every
report and drops when the container is emptied) and Dragino LAQ4 air-quality sensors (CO2,
temperature and humidity follow a daily cycle). EM310 uplinks carry the decoded ``object`` as a
ChirpStack codec would; LAQ4 uplinks carry the raw bytes only, so that jonction's built-in
decoder is exercised too. Posts go to ``target`` with ``?event=up``; a target that is not up yet
is retried at the next report.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

log = logging.getLogger("jonction.simulators.lorawan")

EM310_PREFIX = "24e124713b"
LAQ4_PREFIX = "a84041"
APPLICATION_ID = "5e1f9a3c-7b2d-4c8e-9f0a-1b2c3d4e5f60"
GATEWAYS = ("7276ff002e062a11", "7276ff002e062a42")


@dataclass
class SimDevice:
    """One simulated device and its evolving state."""

    dev_eui: str
    model: str
    f_cnt: int = 0
    fill: float = 0.2
    """EM310-UDL: fill ratio of the container it watches."""


def _model(dev_eui: str, given: str | None) -> str:
    if given:
        return given
    if dev_eui.startswith(EM310_PREFIX):
        return "em310-udl"
    if dev_eui.startswith(LAQ4_PREFIX):
        return "laq4"
    raise ValueError(f"lorawan simulator: cannot tell the model of {dev_eui}; give {{dev_eui, model}}")


def laq4_bytes(co2: int, tvoc: int, temperature: float, humidity: float, battery_v: float) -> bytes:
    """An 11-byte Dragino LAQ4 CO2-mode frame (fPort 2)."""
    mv = round(battery_v * 1000)
    return bytes([mv >> 8, mv & 0xFF, 0x04]) + tvoc.to_bytes(2, "big") + co2.to_bytes(2, "big") + \
        round(temperature * 10).to_bytes(2, "big", signed=True) + round(humidity * 10).to_bytes(2, "big")


class LorawanSimulator:
    """Posts one uplink per device every ``interval`` seconds until stopped."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.target = str(config["target"])
        self.interval = float(config.get("interval", 5))
        self.token = config.get("token")
        self.container_height_mm = float(config.get("container_height_mm", 1800))
        self.full_distance_mm = float(config.get("full_distance_mm", 250))
        self.random = random.Random(config.get("seed", 20260304))
        self.devices: list[SimDevice] = []
        for item in config.get("devices", []):
            eui, model = (item, None) if isinstance(item, str) else (item["dev_eui"], item.get("model"))
            eui = str(eui).lower()
            self.devices.append(SimDevice(eui, _model(eui, model), fill=self.random.uniform(0.05, 0.6)))
        self.sent = 0
        """Uplinks the integration accepted (2xx)."""
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start posting in the background."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._loop(), name="simulator:lorawan")

    async def stop(self) -> None:
        """Stop posting; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _loop(self) -> None:
        while True:
            for device in self.devices:
                await self.post(self.uplink(device, datetime.now(UTC)))
            await asyncio.sleep(self.interval)

    async def post(self, body: dict[str, Any]) -> bool:
        """POST one event; False (logged at debug) when the integration is not reachable or refuses."""
        assert self._session is not None, "start() first"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self._session.post(self.target, params={"event": "up"}, json=body, headers=headers) as r:
                if r.status < 300:
                    self.sent += 1
                    return True
                log.warning("lorawan simulator: %s answered %s", self.target, r.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.debug("lorawan simulator: %s not reachable (%s)", self.target, exc)
        return False

    def uplink(self, device: SimDevice, now: datetime) -> dict[str, Any]:
        """The next ChirpStack v4 ``up`` event of a device."""
        device.f_cnt += 1
        rssi = self.random.randint(-118, -85)
        doc: dict[str, Any] = {
            "deduplicationId": str(uuid.UUID(int=self.random.getrandbits(128), version=4)),
            "time": now.isoformat(timespec="microseconds"),
            "deviceInfo": {
                "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "Démo",
                "applicationId": APPLICATION_ID, "applicationName": "capteurs-demo",
                "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
                "deviceProfileName": "Milesight EM310-UDL" if device.model == "em310-udl" else "Dragino LAQ4",
                "deviceName": device.dev_eui[-6:], "devEui": device.dev_eui,
            },
            "devAddr": "01" + device.dev_eui[-6:], "adr": True, "dr": 5, "fCnt": device.f_cnt,
            "rxInfo": [{"gatewayId": gw, "uplinkId": self.random.randint(1, 65535), "rssi": rssi - 6 * i,
                        "snr": round(self.random.uniform(-5, 10), 2)} for i, gw in enumerate(GATEWAYS)],
            "txInfo": {"frequency": 868100000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7,
                                                                      "codeRate": "CR_4_5"}}},
        }
        if device.model == "em310-udl":
            device.fill += self.random.uniform(0.005, 0.04)
            if device.fill > 0.95:
                device.fill = self.random.uniform(0.0, 0.05)  # emptied by the collection round
            span = self.container_height_mm - self.full_distance_mm
            distance = round(self.container_height_mm - device.fill * span)
            battery = max(1, 100 - device.f_cnt // 500)
            payload = bytes([0x01, 0x75, battery, 0x03, 0x82]) + distance.to_bytes(2, "little") + bytes([0x04, 0, 0])
            doc["fPort"] = 85
            doc["data"] = base64.b64encode(payload).decode()
            doc["object"] = {"battery": battery, "distance": distance, "position": "normal"}
        else:
            hour = now.hour + now.minute / 60
            day = math.sin(2 * math.pi * (hour - 9) / 24)
            co2 = int(430 + 120 * day + self.random.uniform(-15, 15))
            temperature = round(13 + 7 * day + self.random.uniform(-0.5, 0.5), 1)
            humidity = round(min(99.0, max(5.0, 62 - 18 * day + self.random.uniform(-2, 2))), 1)
            tvoc = int(max(0, 40 + 30 * day + self.random.uniform(-5, 5)))
            doc["fPort"] = 2
            doc["data"] = base64.b64encode(laq4_bytes(co2, tvoc, temperature, humidity, 3.3)).decode()
        return doc


def create(config: Mapping[str, Any]) -> LorawanSimulator:
    """The ``jonction.simulators`` factory: ``create(options)`` then ``await start()`` / ``stop()``."""
    return LorawanSimulator(config)
