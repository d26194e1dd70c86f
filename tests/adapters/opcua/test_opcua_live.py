"""The OPC UA adapter against real asyncua servers (the waternet simulator) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from adapters.kit.simulators.waternet import NAMESPACE, WaterNet, create
from adapters.opcua import OpcUaAdapter
from adapters.opcua.certs import make_certificate
from gateway.errors import AuthFailed, ConfigInvalid, Unavailable
from gateway.model import RawMessage
from tests.conftest import free_port

TIMEOUT = 30.0


async def wait_for(predicate: Callable[[], Any], what: str, limit: float = TIMEOUT) -> None:
    """Poll ``predicate`` until it holds (generous timeout, no timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Collector:
    """An ``emit`` that keeps every message, like a durable outbox would."""

    def __init__(self) -> None:
        self.messages: list[RawMessage] = []

    async def __call__(self, raw: RawMessage) -> None:
        self.messages.append(raw)

    def docs(self, node_suffix: str | None = None, server: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(m.payload) for m in self.messages]
        return [
            d for d in out
            if (node_suffix is None or d["node"].endswith(node_suffix)) and (server is None or d["server"] == server)
        ]


def server_config(name: str, sim: WaterNet, **extra: Any) -> dict[str, Any]:
    """A server section mapping a few waternet nodes (node ids and browse paths)."""
    cfg: dict[str, Any] = {
        "name": name,
        "endpoint": sim.endpoint,
        "namespace": NAMESPACE,
        "publishing_interval_ms": 100,
        "sampling_interval_ms": 50,
        "reconnect": {"min_s": 0.2, "max_s": 1.0},
        "nodes": [
            {"node": f"nsu={NAMESPACE};s=Pump1.Speed", "entity": f"urn:ngsi-ld:Pump:{name}-P1",
             "type": "Pump", "attribute": "speed"},
            {"node": f"nsu={NAMESPACE};s=Pump1.Running", "entity": f"urn:ngsi-ld:Pump:{name}-P1",
             "type": "Pump", "attribute": "running"},
            {"browse_path": "WaterNet/Tank1/Level", "entity": f"urn:ngsi-ld:Tank:{name}-T1",
             "type": "Tank", "attribute": "level"},
            {"browse_path": "WaterNet/Junction1/Pressure", "entity": f"urn:ngsi-ld:Junction:{name}-J1",
             "type": "Junction", "attribute": "pressure"},
            {"node": f"nsu={NAMESPACE};s=Pump1.EnergyTotal", "entity": f"urn:ngsi-ld:DeviceMeasurement:{name}-E",
             "type": "DeviceMeasurement", "attribute": "numValue"},
            {"node": f"nsu={NAMESPACE};s=Pump1.Vibration", "entity": f"urn:ngsi-ld:Pump:{name}-P1",
             "type": "Pump", "attribute": "vibrationSpectrum"},
        ],
    }
    cfg.update(extra)
    return cfg


@contextlib.asynccontextmanager
async def running(adapter: OpcUaAdapter, emit: Callable[[RawMessage], Awaitable[None]]) -> AsyncIterator[None]:
    """Run the adapter in a task and stop it (idempotently) at the end."""
    task = asyncio.create_task(adapter.run(emit))
    try:
        yield
    finally:
        await adapter.stop()
        await asyncio.wait_for(task, TIMEOUT)
        await adapter.stop()


@pytest.fixture
async def sim() -> AsyncIterator[WaterNet]:
    server = create({"port": free_port(), "interval_s": 0.1})
    await server.start()
    yield server
    await server.stop()


def assert_no_duplicates(collector: Collector) -> None:
    keys = [m.idempotency_key for m in collector.messages]
    assert len(keys) == len(set(keys)), "a value was emitted twice"
    by_node: dict[str, list[str]] = {}
    for doc in collector.docs():
        by_node.setdefault(doc["node"], []).append(doc["source_ts"])
    for node, stamps in by_node.items():
        assert stamps == sorted(stamps), f"{node}: source timestamps out of order"
        assert len(stamps) == len(set(stamps)), f"{node}: the same source timestamp twice"


async def test_values_flow_with_units_status_and_types(sim: WaterNet) -> None:
    adapter = OpcUaAdapter({"name": "eau", "servers": [server_config("usine", sim)]})
    out = Collector()
    async with running(adapter, out):
        await wait_for(lambda: len(out.docs("Pump1.Speed")) >= 3, "three pump speeds")
        await wait_for(lambda: out.docs("Vibration") and out.docs("EnergyTotal"), "array and 64-bit values")
    speed = out.docs("Pump1.Speed")
    assert speed[0]["initial"] is True and "initial" not in speed[1]
    assert len({d["value"] for d in speed}) >= 2, "the values move"
    raw_speed = next(m for m in out.messages if m.metadata["node"].endswith("Pump1.Speed"))
    (pump,) = adapter.to_entities(raw_speed)
    assert pump["id"] == "urn:ngsi-ld:Pump:usine-P1"
    assert pump["speed"]["unitCode"] == "RPM", "EUInformation decoded to the UN/CEFACT common code"
    assert pump["speed"]["observedAt"] == json.loads(raw_speed.payload)["source_ts"]
    assert pump["speed"]["opcuaStatus"]["value"] == "Good"
    raw_energy = next(m for m in out.messages if m.metadata["node"].endswith("EnergyTotal"))
    (energy,) = adapter.to_entities(raw_energy)
    assert energy["numValue"]["value"] > 2**53 and isinstance(energy["numValue"]["value"], int)
    assert energy["numValue"]["exactValue"]["value"] == str(energy["numValue"]["value"])
    assert energy["numValue"]["unitCode"] == "WHR"
    raw_vib = next(m for m in out.messages if m.metadata["node"].endswith("Vibration"))
    (vib,) = adapter.to_entities(raw_vib)
    assert isinstance(vib["vibrationSpectrum"]["value"], list) and len(vib["vibrationSpectrum"]["value"]) == 8
    tank = next(m for m in out.messages if m.metadata["node"].endswith("Tank1.Level"))
    assert adapter.to_entities(tank)[0]["level"]["unitCode"] == "MTR"
    assert_no_duplicates(out)


async def test_server_restart_reconnects_without_duplicates(
    sim: WaterNet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jonction.adapters.opcua")
    adapter = OpcUaAdapter({"servers": [server_config("usine", sim)]})
    out = Collector()
    replacement: WaterNet | None = None
    async with running(adapter, out):
        link = adapter.links[0]
        await wait_for(lambda: len(out.docs("Pump1.Speed")) >= 3, "values before the restart")
        await sim.stop()
        await wait_for(lambda: not link.connected.is_set(), "the loss to be noticed")
        before = len(out.docs("Pump1.Speed"))
        # Same port, same namespace: a new server process, as after a PLC or SCADA restart.
        replacement = create({"port": sim.port, "interval_s": 0.1, "start_step": sim.step})
        await replacement.start()
        try:
            await wait_for(lambda: link.connections >= 2 and link.connected.is_set(), "the reconnection")
            await wait_for(lambda: len(out.docs("Pump1.Speed")) >= before + 3, "values after the restart")
        finally:
            await adapter.stop()
    if replacement is not None:
        await replacement.stop()
    assert_no_duplicates(out)
    messages = [r.getMessage() for r in caplog.records if r.name == "jonction.adapters.opcua"]
    assert messages.count("unavailable") == 1, messages
    assert messages.count("recovered") == 1, messages
    # The constant Running flag is re-read after the restart (a new server, a new source timestamp).
    assert len(out.docs("Pump1.Running")) == 2


class CuttableProxy:
    """A loopback TCP proxy whose connections can be cut, as a network outage would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()


async def test_network_cut_fills_the_gap_from_history_without_duplicates() -> None:
    sim = create({"port": free_port(), "interval_s": 0.1, "historize": True})
    await sim.start()
    proxy = CuttableProxy(sim.port)
    await proxy.start()
    cfg = server_config("usine", sim, history_on_reconnect=True)
    cfg["endpoint"] = f"opc.tcp://127.0.0.1:{proxy.port}{sim.path}"
    adapter = OpcUaAdapter({"servers": [cfg]})
    out = Collector()
    try:
        async with running(adapter, out):
            link = adapter.links[0]
            await wait_for(lambda: len(out.docs("Pump1.Speed")) >= 3, "values before the cut")
            await proxy.cut()
            await wait_for(lambda: not link.connected.is_set(), "the cut to be noticed")
            cut_at = sim.step
            await wait_for(lambda: sim.step >= cut_at + 5, "the server to move on during the cut")
            await proxy.start()
            await wait_for(lambda: link.connections >= 2 and link.connected.is_set(), "the reconnection")
            await wait_for(lambda: any(d.get("history") for d in out.docs("Pump1.Speed")), "the gap to be filled")
    finally:
        await proxy.cut()
        await sim.stop()
    assert_no_duplicates(out)
    # The server kept running: its constant Running flag has the same source timestamp after
    # the cut, so it is not emitted again.
    assert len(out.docs("Pump1.Running")) == 1
    filled = [d for d in out.docs("Pump1.Speed") if d.get("history")]
    assert len(filled) >= 3, "the values changed during the cut are read back from history"


async def test_absolute_deadband_filters_small_changes(sim: WaterNet) -> None:
    cfg = server_config("usine", sim)
    for node in cfg["nodes"]:
        if node.get("browse_path") == "WaterNet/Junction1/Pressure":
            node["deadband"] = {"type": "absolute", "value": 50.0}  # pressure moves by < 1 bar
    adapter = OpcUaAdapter({"servers": [cfg]})
    out = Collector()
    async with running(adapter, out):
        await wait_for(lambda: len(out.docs("Pump1.Speed")) >= 8, "many pump speeds")
    assert len(out.docs("Junction1.Pressure")) == 1, "only the initial pressure passes the deadband"


def test_monitored_item_request_carries_sampling_and_percent_deadband() -> None:
    from adapters.opcua.transport import ServerLink, _Item

    class _Node:
        nodeid = ua.NodeId("Pump1.Flow", 2)  # type: ignore[arg-type]  # asyncua annotates its wire types

    item = _Item(ref="x", node=_Node(), node_id="ns=2;s=Pump1.Flow", sampling_ms=250.0,  # type: ignore[arg-type]
                 deadband={"type": "percent", "value": 1.5})
    request = ServerLink.monitored_item_request(item, 7, 10)
    params = request.RequestedParameters
    assert params.SamplingInterval == 250.0 and params.ClientHandle == 7 and params.QueueSize == 10
    assert params.Filter.DeadbandType == ua.DeadbandType.Percent and params.Filter.DeadbandValue == 1.5
    assert params.Filter.Trigger == ua.DataChangeTrigger.StatusValue


async def test_bad_status_is_kept_not_dropped(sim: WaterNet) -> None:
    adapter = OpcUaAdapter({"servers": [server_config("usine", sim)]})
    out = Collector()
    async with running(adapter, out):
        await wait_for(lambda: len(out.docs("Junction1.Pressure")) >= 1, "a first pressure")
        sim.frozen.add("Junction1.Pressure")
        await sim.set_value("Junction1.Pressure", None, status=StatusCodes.BadSensorFailure)
        await wait_for(lambda: any(d["status"]["code"] != 0 for d in out.docs("Junction1.Pressure")), "a Bad value")
        await sim.set_value("Junction1.Pressure", 2.5, status=StatusCodes.UncertainLastUsableValue)
        await wait_for(lambda: out.docs("Junction1.Pressure")[-1]["value"] == 2.5, "an Uncertain value")
    raws = [m for m in out.messages if m.metadata["node"].endswith("Junction1.Pressure")]
    bad = next(m for m in raws if json.loads(m.payload)["status"]["name"] == "BadSensorFailure")
    (junction,) = adapter.to_entities(bad)
    assert junction["opcuaStatus"]["value"] == "Bad"
    assert junction["opcuaStatus"]["statusCode"]["value"] == "BadSensorFailure"
    assert "pressure" not in junction
    (uncertain,) = adapter.to_entities(raws[-1])
    assert uncertain["pressure"]["value"] == {"value": 2.5}, "EPANET observations are {value: ...} objects"
    assert uncertain["pressure"]["opcuaStatus"]["value"] == "Uncertain"


async def test_one_adapter_serves_several_servers(sim: WaterNet) -> None:
    other = create({"port": free_port(), "interval_s": 0.1})
    await other.start()
    try:
        adapter = OpcUaAdapter({"servers": [server_config("nord", sim), server_config("sud", other, tenant="sud")]})
        out = Collector()
        async with running(adapter, out):
            await wait_for(lambda: out.docs(server="nord") and out.docs(server="sud"), "values from both")
    finally:
        await other.stop()
    sud = next(m for m in out.messages if m.metadata["server"] == "sud")
    assert sud.tenant == "sud"
    ids = {adapter.to_entities(m)[0]["id"] for m in out.messages}
    assert "urn:ngsi-ld:Pump:nord-P1" in ids and "urn:ngsi-ld:Pump:sud-P1" in ids


async def test_browse_lists_variables_with_units(sim: WaterNet) -> None:
    adapter = OpcUaAdapter({"servers": [server_config("usine", sim)]})
    found = await adapter.browse("usine", "WaterNet")
    by_path = {f["browse_path"]: f for f in found}
    assert by_path["Pump1/Speed"]["node"].endswith(";s=Pump1.Speed")
    assert by_path["Pump1/EnergyTotal"]["datatype"] == "UInt64"
    assert by_path["Tank1/Level"]["eu"]["unit_id"] == 5067858
    assert not any(path.endswith("EngineeringUnits") for path in by_path)


async def test_check_reports_an_unreachable_server() -> None:
    cfg = {"servers": [{"name": "absent", "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/x", "timeout_s": 1,
                        "nodes": [{"node": "ns=2;s=X", "entity": "urn:ngsi-ld:Pump:X", "type": "Pump",
                                   "attribute": "speed"}]}]}
    with pytest.raises(Unavailable, match="absent"):
        await OpcUaAdapter(cfg).check()


@pytest.fixture
async def secure_sim(tmp_path: Path) -> AsyncIterator[tuple[WaterNet, Path]]:
    cert, key = make_certificate(tmp_path / "pki", "waternet", "urn:jonction:simulator:waternet:server", server=True)
    server = create({
        "port": free_port(), "interval_s": 0.1, "policies": ["Basic256Sha256_SignAndEncrypt"],
        "certificate": str(cert), "private_key": str(key), "users": {"operator": "s3cret-pw"},
    })
    await server.start()
    yield server, tmp_path
    await server.stop()


def secure_config(sim: WaterNet, tmp_path: Path, password_file: Path) -> dict[str, Any]:
    cert, key = make_certificate(tmp_path / "pki", "jonction", "urn:jonction:opcua:client")
    cfg = server_config("secure", sim, username="operator", password_file=str(password_file))
    cfg["security"] = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt",
                       "certificate": str(cert), "private_key_file": str(key)}
    return {"servers": [cfg]}


async def test_sign_and_encrypt_with_username_password(
    secure_sim: tuple[WaterNet, Path], caplog: pytest.LogCaptureFixture
) -> None:
    sim, tmp_path = secure_sim
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw\n")
    caplog.set_level(logging.DEBUG)
    adapter = OpcUaAdapter(secure_config(sim, tmp_path, secret))
    await adapter.check()
    out = Collector()
    async with running(adapter, out):
        await wait_for(lambda: len(out.docs("Pump1.Speed")) >= 2, "values over the secure channel")
    assert adapter.to_entities(out.messages[0])
    assert "s3cret-pw" not in caplog.text, "the password never reaches the logs"


async def test_wrong_password_is_refused(secure_sim: tuple[WaterNet, Path]) -> None:
    sim, tmp_path = secure_sim
    secret = tmp_path / "password"
    secret.write_text("wrong")
    with pytest.raises(AuthFailed, match="BadUserAccessDenied"):
        await OpcUaAdapter(secure_config(sim, tmp_path, secret)).check()


async def test_unsecured_client_is_refused_by_a_secure_server(secure_sim: tuple[WaterNet, Path]) -> None:
    sim, _ = secure_sim
    cfg = server_config("plain", sim, username="operator", password="s3cret-pw", timeout_s=2)
    with pytest.raises(ConfigInvalid, match="security policy"):
        await OpcUaAdapter({"servers": [cfg]}).check()


async def test_alarms_become_alert_entities(sim: WaterNet) -> None:
    cfg = server_config("usine", sim, events=[{"source": "i=2253", "category": "environment",
                                               "alert_sources": {"Tank1": "urn:ngsi-ld:Tank:usine-T1"}}])
    adapter = OpcUaAdapter({"servers": [cfg]})
    out = Collector()
    async with running(adapter, out):
        link = adapter.links[0]
        await wait_for(link.connected.is_set, "the subscription")
        await sim.alarm("Tank1", "Niveau haut", severity=850)
        await sim.alarm("Pump1", "Défaut variateur", severity=300)
        await wait_for(lambda: len([m for m in out.messages if m.metadata.get("kind") == "event"]) >= 2, "two alarms")
    events = [m for m in out.messages if m.metadata.get("kind") == "event"]
    alerts = [adapter.to_entities(m)[0] for m in events]
    tank = next(a for a in alerts if a["name"]["value"] == "Tank1")
    assert tank["type"] == "Alert" and tank["severity"]["value"] == "critical"
    assert tank["alertSource"]["object"] == "urn:ngsi-ld:Tank:usine-T1"
    assert tank["description"]["value"] == "Niveau haut"
    pump = next(a for a in alerts if a["name"]["value"] == "Pump1")
    assert pump["severity"]["value"] == "low"
    assert pump["alertSource"]["object"] == "urn:ngsi-ld:Device:usine-Pump1", "unlisted sources get a Device id"
    assert len({m.idempotency_key for m in events}) == len(events)


async def test_gateway_restart_resumes_from_saved_state(tmp_path: Path) -> None:
    sim = create({"port": free_port(), "interval_s": 0.1, "historize": True})
    await sim.start()
    cfg = {"state_dir": str(tmp_path / "state"), "servers": [server_config("usine", sim, history_on_reconnect=True)]}
    out = Collector()
    try:
        first = OpcUaAdapter(cfg)
        async with running(first, out):
            await wait_for(lambda: len(out.docs("Pump1.Speed")) >= 3, "values before the restart")
        stopped_at = sim.step
        await wait_for(lambda: sim.step >= stopped_at + 5, "the server to move on while the gateway is down")
        second = OpcUaAdapter(cfg)
        async with running(second, out):
            await wait_for(lambda: any(d.get("history") for d in out.docs("Pump1.Speed")), "the gap to be filled")
    finally:
        await sim.stop()
    assert (tmp_path / "state" / "opcua-usine.json").exists()
    assert_no_duplicates(out)
    assert len(out.docs("Pump1.Running")) == 1, "an unchanged value is not emitted again after a restart"


async def test_percent_deadband_applied_client_side_uses_the_eu_range(sim: WaterNet) -> None:
    cfg = server_config("usine", sim)
    for node in cfg["nodes"]:
        if node.get("browse_path") == "WaterNet/Junction1/Pressure":
            # EURange is 0-16 bar: 25 % is 4 bar, far more than the pressure moves.
            node["deadband"] = {"type": "percent", "value": 25, "client_side": True}
        if node.get("browse_path") == "WaterNet/Tank1/Level":
            # EURange 0-6.75 m: 0.1 % is under 7 mm, so the level's moves pass.
            node["deadband"] = {"type": "percent", "value": 0.1, "client_side": True}
    adapter = OpcUaAdapter({"servers": [cfg]})
    out = Collector()
    async with running(adapter, out):
        await wait_for(lambda: len(out.docs("Tank1.Level")) >= 5, "several levels")
    assert len(out.docs("Junction1.Pressure")) == 1, "the percent deadband holds the pressure back"
    assert_no_duplicates(out)


async def test_cli_browse_prints_a_ready_mapping(sim: WaterNet, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    code = await asyncio.to_thread(main, ["opcua", "browse", "--endpoint", sim.endpoint, "--root", "WaterNet"])
    assert code == 0
    text = capsys.readouterr().out
    mapping = yaml.safe_load(text)
    speed = next(n for n in mapping["nodes"] if n["node"].endswith("s=Pump1.Speed"))
    assert speed["node"] == f"nsu={NAMESPACE};s=Pump1.Speed"
    assert speed["attribute"] == "speed" and speed["entity"] == "urn:ngsi-ld:Device:Pump1"
    assert "r/min (RPM)" in text
    unreachable = await asyncio.to_thread(
        main, ["opcua", "browse", "--endpoint", f"opc.tcp://127.0.0.1:{free_port()}/none"])
    assert unreachable == Unavailable.exit_code
    assert "cannot browse" in capsys.readouterr().err


async def test_a_pinned_server_certificate_refuses_another_server(secure_sim: tuple[WaterNet, Path]) -> None:
    sim, tmp_path = secure_sim
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw")
    impostor, _ = make_certificate(tmp_path / "other", "impostor", "urn:impostor", server=True)
    cfg = secure_config(sim, tmp_path, secret)
    cfg["servers"][0]["security"]["server_certificate"] = str(impostor)
    cfg["servers"][0]["timeout_s"] = 2
    with pytest.raises((Unavailable, AuthFailed)):
        await OpcUaAdapter(cfg).check()


async def test_sign_only_mode(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path / "pki", "waternet", "urn:jonction:simulator:waternet:server", server=True)
    sim = create({"port": free_port(), "interval_s": 0.1, "policies": ["Basic256Sha256_Sign"],
                  "certificate": str(cert), "private_key": str(key)})
    await sim.start()
    try:
        secret = tmp_path / "unused"
        secret.write_text("x")
        cfg = secure_config(sim, tmp_path, secret)
        server = cfg["servers"][0]
        server["security"]["mode"] = "Sign"
        for key_name in ("username", "password_file"):
            server.pop(key_name)
        adapter = OpcUaAdapter(cfg)
        out = Collector()
        async with running(adapter, out):
            await wait_for(lambda: len(out.docs("Pump1.Speed")) >= 2, "values over a signed channel")
        with pytest.raises(ConfigInvalid):  # the server offers Sign only: SignAndEncrypt has no endpoint
            server["security"]["mode"] = "SignAndEncrypt"
            await OpcUaAdapter(cfg).check()
    finally:
        await sim.stop()
