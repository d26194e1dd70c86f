"""Several ingestion processes on one machine: ``jonction run --workers N``.

Where each part runs, and why:

* **N worker processes** run the sources whose input can be shared: an HTTP push listener on a
  fixed port binds it with ``SO_REUSEPORT`` in every worker (the kernel spreads connections), an
  MQTT source subscribes as one ``$share/<group>/`` group (the broker spreads messages; each
  worker has its own client id). A worker archives, deduplicates, translates, validates and
  commits the outbox rows to the gateway's SQLite file (WAL, shared by every process) in its own
  group-commit transaction, and acknowledges (2xx, PUBACK) only after that commit, as one process
  does. ``BEGIN IMMEDIATE`` serialises writers, so outbox ids grow in commit order and the
  publisher's cursor never skips a row committed late.
* **The parent process** runs what must exist once: the main port (store API, admin API,
  ``/metrics``, the @context), the embedded store and its writer thread, one publisher per sink
  (an entity's readings in order, the ``observedAt`` guard and the circuit breaker are per
  publisher), sources that cannot share their input (pollers, OPC UA, files, a listener on port
  0), simulators and maintenance (archive and key pruning). Ingestion no longer shares a core
  (or the GIL) with the store's writes or the publishers.
* **One control socket per worker.** The worker reports its commits within 2 ms, several in one
  line (the sinks to wake, the bytes they added to the outbox and archive, and the counter
  series those commits changed) and, every half second, all its counters and its sources' state;
  the parent answers with the outbox size (the disk budget is shared) and forwards source
  restarts. Counters appear in the parent's ``/metrics`` with a ``worker`` label.
* **A worker that dies is restarted** by the parent, with backoff, logged as an error and shown
  in ``jonction_worker_restarts``; what it acknowledged is on disk already. A worker whose parent
  is gone (its control socket closes, or is reset when the parent died with reports unread)
  shuts down gracefully. On SIGTERM the parent stops the
  workers first (each commits what it accepted), then drains the publishers.
* **Counters survive a worker's death.** A worker reports absolute values, and a new process
  counts from zero: the parent keeps, per worker index and series, what the previous processes of
  that index reported last, and shows that base plus the new process's figure, so a counter with
  a ``worker`` label never goes back. What a killed worker counted after its last report is lost:
  the counters ride on the commit report, so that is what it committed within the last 2 ms
  (``COMMIT_REPORT_S``) at most — the messages themselves are on disk, only their count is missing.
  A shared source's ``messages`` and ``restarts`` in ``/admin/sources`` keep the same kind of base
  (they ride on the half-second report, so a killed worker's last half second is what they may miss).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web

from gateway.contract import SHARED_PORTS, Adapter, adapter_logger, instantiate
from gateway.errors import ConfigInvalid, Unavailable
from gateway.model import RawMessage
from gateway.runtime.config import GatewayConfig, SourceConfig, source_config
from gateway.runtime.metrics import Counter, Labels, Metrics
from gateway.runtime.pipeline import SourceBinding
from gateway.runtime.state import RUNTIME, Runtime
from gateway.runtime.supervisor import Emit, Supervised
from gateway.store.base import tune_gc

log = logging.getLogger("jonction.workers")

REPORT_EVERY_S: Final = 0.5
"""How often a worker sends its counters and sources' state, and the parent the outbox size."""
RESTART_INITIAL_S: Final = 0.5
RESTART_MAX_S: Final = 30.0
HEALTHY_AFTER_S: Final = 30.0
"""A worker that ran this long before dying is restarted at once (its failures are forgotten)."""
READY_WITHIN_S: Final = 120.0
LINE_LIMIT: Final = 64 << 20
COMMIT_REPORT_S: Final = 0.002
"""A worker reports its commits to the parent at most this long after they happen (several per report)."""
_PUSH_PROTOCOLS: Final = frozenset({"http-push", "webhook"})
_POLL_PROTOCOLS: Final = frozenset({"http-poll", "opcua", "file"})
_STATE_ORDER: Final = ("failed", "unavailable", "starting", "running", "stopped")
"""How the state of a source run by several workers reads: the worst worker's."""


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------- plan


def sharing(src: SourceConfig, cls: type[Adapter]) -> str | None:
    """How a source can be spread over workers: ``"http"`` (SO_REUSEPORT), ``"mqtt"`` ($share) or None."""
    config = src.config
    transport = config.get("transport")
    if isinstance(config.get("mqtt"), Mapping) and transport in (None, "mqtt") and (
            transport == "mqtt" or "http" not in config):
        return "mqtt"
    protocols = set(cls.manifest.protocols)
    if not protocols & _PUSH_PROTOCOLS or protocols & _POLL_PROTOCOLS or transport not in (None, "http"):
        return None
    listen = config.get("listen")
    if not isinstance(listen, Mapping):
        http = config.get("http")
        listen = http.get("listen") if isinstance(http, Mapping) else None
    # Port 0 picks a free port in each process: the workers would not share it.
    if isinstance(listen, Mapping) and listen.get("port") == 0:
        return None
    return "http"


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """How ``jonction run --workers N`` splits the gateway: which sources the workers run, and how many."""

    count: int
    shared: frozenset[str]
    """Names of the sources the workers run (every worker runs each of them)."""
    command: tuple[str, ...]
    """The command line that starts one worker (``--worker-index`` and ``--control-fd`` are added)."""


def plan(config: GatewayConfig, adapters: Mapping[str, type[Adapter]], workers: int,
         command: Sequence[str]) -> WorkerPlan | None:
    """The split for ``workers`` processes, or None when one process does it all (N = 1, nothing to share)."""
    if workers <= 1:
        return None
    shared = frozenset(s.name for s in config.sources
                       if s.enabled and s.adapter in adapters and sharing(s, adapters[s.adapter]) is not None)
    if not shared:
        log.info("no source can share its input among workers (push listeners on a fixed port, MQTT): "
                 "running in one process")
        return None
    return WorkerPlan(workers, shared, tuple(command))


def worker_source(src: SourceConfig, index: int) -> SourceConfig:
    """The source as worker ``index`` runs it: an MQTT source joins a shared group, under its own client id.

    With a configured ``shared_group`` worker 0 keeps the configured client id (and the session the
    broker holds under it); the others add ``-w<k>``. Without one, the workers join
    ``jonction-<source>`` and every one adds ``-w<k>``: the session under the configured id holds a
    plain subscription, which would hand a worker every message a second time.
    """
    mqtt = src.config.get("mqtt")
    if not isinstance(mqtt, Mapping):
        return src
    own = dict(mqtt)
    client_id = str(mqtt.get("client_id", f"jonction-{src.name}"))
    if "shared_group" in mqtt and index == 0:
        own["client_id"] = client_id
    else:
        own["client_id"] = f"{client_id}-w{index}"
    own.setdefault("shared_group", f"jonction-{src.name}")
    return SourceConfig(src.name, src.adapter, {**src.config, "mqtt": own}, src.tenant, src.routes, src.enabled,
                        src.routing)


def _encode(message: Mapping[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


def _counters(metrics: Metrics) -> tuple[Counter, ...]:
    """The counters the ingestion path increments (what a worker reports)."""
    return (metrics.messages_in, metrics.duplicates, metrics.entities_in, metrics.dead_letters)


Series = tuple[str, Labels]
"""One counter series: the counter's name and the series' labels (as the worker keeps them)."""


# ---------------------------------------------------------------------------- parent side


async def _no_emit(raw: RawMessage) -> None:  # noqa: ARG001  # the parent never runs a shared source
    raise RuntimeError("a shared source runs in the workers")


class SharedSource(Supervised):
    """A source the workers run. Its adapter instance here serves replays; its state is the workers'."""

    def __init__(self, name: str, adapter_name: str, adapter: Adapter, emit: Emit) -> None:
        super().__init__(name, adapter_name, adapter, emit)
        self._counts: dict[int, tuple[int, int]] = {}
        """Per worker index: (messages, restarts) its running process reported last (it counts from zero)."""
        self._base: dict[int, tuple[int, int]] = {}
        """Per worker index: what its earlier processes counted (what a new one's figures add to)."""

    def start(self) -> None:
        """The workers run it."""

    async def stop(self, within: float = 5.0) -> None:
        """The workers stop it."""
        self.status.state = "stopped"

    def take(self, index: int, report: Mapping[str, Any]) -> None:
        """Keep the counts worker ``index``'s process reported for this source (absolute, for that process)."""
        self._counts[index] = (int(report.get("messages", 0)), int(report.get("restarts", 0)))

    def retire(self, index: int) -> None:
        """Worker ``index``'s process exited: its counts join the index's base (the next process counts from 0)."""
        messages, restarts = self._counts.pop(index, (0, 0))
        base_messages, base_restarts = self._base.get(index, (0, 0))
        self._base[index] = (base_messages + messages, base_restarts + restarts)

    def merge(self, states: Iterable[Mapping[str, Any]]) -> None:
        """Read the workers' reports into one state: the worst state, the last error; counts that never go back."""
        status = self.status
        # The counts come from what every process of every index reported, not from the live
        # reports only: a restarted worker's new process would otherwise take its old one's counts away.
        counted = [*self._base.values(), *self._counts.values()]
        status.messages = sum(messages for messages, _ in counted)
        status.restarts = sum(restarts for _, restarts in counted)
        reports = list(states)
        if not reports:
            return
        rank = {s: i for i, s in enumerate(_STATE_ORDER)}
        status.state = min((str(r.get("state", "starting")) for r in reports), key=lambda s: rank.get(s, 2))
        status.last_error = next((str(r["lastError"]) for r in reports if r.get("lastError")), None)


@dataclass(slots=True)
class PoolRuntime(Runtime):
    """The parent's runtime: sources the workers run are bound here (replay) but supervised there."""

    shared: frozenset[str] = frozenset()
    pool: WorkerPool | None = None

    def start_source(self, src: SourceConfig) -> Supervised:
        """Bind a shared source (its restart goes to the workers); run any other one here."""
        if src.name not in self.shared:
            return Runtime.start_source(self, src)
        cls = self.adapters[src.adapter]
        effective = source_config(src, cls.config_schema, self.config.data_dir)
        adapter = instantiate(cls, effective, http=self.http, log=adapter_logger(src.adapter))
        self.pipeline.add_source(SourceBinding(src.name, src.adapter, adapter, src.tenant, src.routes, src.routing))
        sup = SharedSource(src.name, src.adapter, adapter, _no_emit)
        self.sources[src.name] = sup
        if self.pool is not None and self.pool.started:
            self.pool.restart_source(src.name)
        return sup


@dataclass(slots=True)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    reader: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    counted: dict[Series, float] = field(default_factory=dict)
    """What this process reported last, per series (absolute: it counts from zero)."""
    gone: bool = False
    """Its control socket closed: what it counted is in the pool's base now."""


class WorkerPool:
    """The parent's side: starts the workers, hears their commits and reports, restarts a dead one."""

    def __init__(self, rt: Runtime, plan: WorkerPlan) -> None:
        self.rt = rt
        self.plan = plan
        self.workers: dict[int, _Worker] = {}
        self.restarts: dict[int, int] = dict.fromkeys(range(plan.count), 0)
        self.started = False
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._counters = {c.name: c for c in _counters(rt.metrics)}
        self._base: dict[int, dict[Series, float]] = {}
        """Per worker index: what its earlier processes counted (what a new one's figures add to)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every worker and wait until each has started its sources (or raise if one exits first)."""
        first = [asyncio.get_running_loop().create_future() for _ in range(self.plan.count)]
        self._tasks = [asyncio.create_task(self._keep(i, first[i]), name=f"worker:{i}")
                       for i in range(self.plan.count)]
        self._tasks.append(asyncio.create_task(self._tell_budget(), name="workers:budget"))
        self._register_gauges()
        try:
            await asyncio.wait_for(asyncio.gather(*first), READY_WITHIN_S)
        except BaseException:
            await self.stop(5.0)
            raise
        self.started = True
        log.info("%d workers started (pids %s) for sources %s", self.plan.count,
                 ", ".join(str(w.process.pid) for w in self.workers.values()), ", ".join(sorted(self.plan.shared)))

    async def stop(self, within: float) -> None:
        """SIGTERM every worker (each commits what it accepted and exits), SIGKILL one still there after ``within``."""
        self.stopping = True
        processes = [w.process for w in self.workers.values() if w.process.returncode is None]
        for proc in processes:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if processes:
            _, late = await asyncio.wait([asyncio.create_task(p.wait()) for p in processes], timeout=within)
            if late:
                log.error("%d workers did not stop within %.0fs: killed", len(late), within)
                for proc in processes:
                    if proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                await asyncio.gather(*(p.wait() for p in processes))
        for w in self.workers.values():
            if w.reader is not None:
                # The last commit reports are still in the socket: read them before closing.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.reader, 5.0)
            w.writer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _spawn(self, index: int) -> _Worker:
        parent_end, child_end = socket.socketpair()
        try:
            fd = child_end.fileno()
            process = await asyncio.create_subprocess_exec(
                *self.plan.command, "--worker-index", str(index), "--control-fd", str(fd),
                pass_fds=(fd,), stdin=asyncio.subprocess.DEVNULL)
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_end, limit=LINE_LIMIT)
        worker = _Worker(index, process, writer)
        worker.reader = asyncio.create_task(self._listen(worker, reader), name=f"worker:{index}:control")
        self.workers[index] = worker
        return worker

    async def _keep(self, index: int, first: asyncio.Future[None]) -> None:
        """Run worker ``index``; restart it with backoff whenever it exits before the gateway stops."""
        failures = 0
        while not self.stopping:
            started = time.monotonic()
            worker = await self._spawn(index)
            waiting = asyncio.create_task(worker.ready.wait())
            exited = asyncio.create_task(worker.process.wait())
            await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if not first.done():
                if worker.ready.is_set():
                    first.set_result(None)
                else:
                    first.set_exception(RuntimeError(
                        f"worker {index} exited with code {worker.process.returncode} before starting "
                        "(see the log above)"))
                    return
            code = await exited
            if self.stopping:
                return
            if worker.reader is not None:
                # Its last reports are still in the socket: count them before a new process reports.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(worker.reader), 5.0)
            self._retire(worker)
            self.restarts[index] += 1
            failures = 1 if time.monotonic() - started > HEALTHY_AFTER_S else failures + 1
            delay = min(RESTART_MAX_S, RESTART_INITIAL_S * 2 ** (failures - 1))
            log.error("worker %d (pid %d) exited with code %s: restarting it in %.1fs", index,
                      worker.process.pid, code, delay, extra={"worker": index})
            self._merge_sources()
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------ messages

    async def _listen(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        try:
            await self._hear_worker(worker, reader)
        finally:
            self._retire(worker)

    async def _hear_worker(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        rt = self.rt
        while True:
            try:
                line = await reader.readline()
            except (ConnectionError, ValueError) as exc:
                log.warning("worker %d: control socket: %s", worker.index, exc)
                return
            if not line:
                return
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("worker %d: unreadable control message", worker.index)
                continue
            kind = message.get("t")
            if kind == "c":
                # The worker's outbox and archive grew by these bytes: keep the parent's budgets right.
                rt.outbox.bytes += int(message.get("o", 0))
                rt.archive.bytes += int(message.get("a", 0))
                rt.outbox.notify(message.get("s") or ())
                if "n" in message:
                    self._take_counters(worker, message["n"])
            elif kind == "stats":
                self._take_stats(worker, message)
            elif kind == "ready":
                worker.ready.set()

    def _take_stats(self, worker: _Worker, message: Mapping[str, Any]) -> None:
        self._take_counters(worker, message.get("counters") or {})
        worker.sources = dict(message.get("sources") or {})
        if not worker.gone:  # retired already: its source counts are in the sources' bases
            for name, report in worker.sources.items():
                sup = self.rt.sources.get(name)
                if isinstance(sup, SharedSource):
                    sup.take(worker.index, report)
        self._merge_sources()

    def _take_counters(self, worker: _Worker, counters: Mapping[str, Any]) -> None:
        """Show a worker's counter values (absolute, for its process) on top of its earlier processes' counts."""
        if worker.gone:
            return  # retired already: its figures are in the base
        label = ("worker", str(worker.index))
        base = self._base.get(worker.index, {})
        for name, series in counters.items():
            counter = self._counters.get(name)
            if counter is None:
                continue
            for labels, value in series:
                own: Labels = tuple(tuple(pair) for pair in labels)
                counted = worker.counted[(name, own)] = float(value)
                key: Labels = tuple(sorted((*own, label)))
                counter.values[key] = base.get((name, own), 0.0) + counted

    def _retire(self, worker: _Worker) -> None:
        """Add what a process that exited counted to its index's base (once; the next process counts from 0)."""
        if worker.gone:
            return
        worker.gone = True
        base = self._base.setdefault(worker.index, {})
        for series, value in worker.counted.items():
            base[series] = base.get(series, 0.0) + value
        for sup in self.rt.sources.values():
            if isinstance(sup, SharedSource):
                sup.retire(worker.index)

    def _merge_sources(self) -> None:
        live = [w for w in self.workers.values() if w.process.returncode is None]
        for name, sup in self.rt.sources.items():
            if isinstance(sup, SharedSource):
                reports = [w.sources[name] for w in live if name in w.sources]
                if len(live) < self.plan.count:
                    reports.append({"state": "unavailable", "lastError": "a worker is restarting"})
                sup.merge(reports)

    def _send(self, worker: _Worker, message: Mapping[str, Any]) -> None:
        if worker.process.returncode is None and not worker.writer.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                worker.writer.write(_encode(message))

    async def _tell_budget(self) -> None:
        """Tell the workers how full the outbox is (its disk budget holds for all processes together)."""
        while True:
            for worker in list(self.workers.values()):
                self._send(worker, {"t": "budget", "o": self.rt.outbox.bytes})
            await asyncio.sleep(REPORT_EVERY_S / 2)

    def restart_source(self, name: str) -> None:
        """Ask every worker to restart a shared source (a fresh adapter that re-reads its files)."""
        for worker in self.workers.values():
            self._send(worker, {"t": "restart", "source": name})

    # ------------------------------------------------------------------ views

    def _register_gauges(self) -> None:
        def up() -> Iterable[tuple[Labels, float]]:
            return [((("worker", str(i)),), 1.0 if w.process.returncode is None and w.ready.is_set() else 0.0)
                    for i, w in sorted(self.workers.items())]

        def restarts() -> Iterable[tuple[Labels, float]]:
            return [((("worker", str(i)),), float(n)) for i, n in sorted(self.restarts.items())]

        self.rt.metrics.gauge("jonction_worker_up", "1 when the ingestion worker process runs.", up)
        self.rt.metrics.gauge("jonction_worker_restarts", "Times the worker process was restarted after it died.",
                              restarts)

    def describe(self) -> dict[str, Any]:
        """Workers for the admin API."""
        return {"workers": [
            {"index": i, "pid": w.process.pid, "running": w.process.returncode is None,
             "ready": w.ready.is_set(), "restarts": self.restarts.get(i, 0), "sources": w.sources}
            for i, w in sorted(self.workers.items())], "sharedSources": sorted(self.plan.shared)}


# ---------------------------------------------------------------------------- worker side


class _ParentLink:
    """The worker's end of the control socket."""

    def __init__(self, rt: Runtime, writer: asyncio.StreamWriter) -> None:
        self.rt = rt
        self.writer = writer
        self.outbox_mark = rt.outbox.bytes
        self.archive_mark = rt.archive.bytes
        self.woken: set[str] = set()
        """Sinks committed to since the last commit report."""
        self.counters = _counters(rt.metrics)
        self.sent: dict[Series, float] = {}
        """The counter values the parent has (the commit report sends only the series that changed)."""
        self._report: asyncio.TimerHandle | None = None

    def send(self, message: Mapping[str, Any]) -> None:
        if not self.writer.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.writer.write(_encode(message))

    def committed(self, sinks: list[str]) -> None:
        """After each commit: report it to the parent within ``COMMIT_REPORT_S``, with the commits after it.

        One report per commit would cost a write here and a read, a parse and a wake-up in the
        parent for every group; the publishers linger longer than this before sending anyway.
        """
        self.woken.update(sinks)
        if self._report is None:
            self._report = asyncio.get_running_loop().call_later(COMMIT_REPORT_S, self.report_commits)

    def report_commits(self) -> None:
        """Wake the parent's publishers of the sinks committed to, with the bytes and counts the commits added.

        The counter series that changed ride along (a handful of small numbers per report): a
        worker that is killed then loses the count of 2 ms of commits at most, not of half a second.
        """
        if self._report is not None:
            self._report.cancel()
            self._report = None
        outbox, archive = self.rt.outbox, self.rt.archive
        changed = self._changed()
        if not self.woken and not changed and outbox.bytes == self.outbox_mark and archive.bytes == self.archive_mark:
            return
        message: dict[str, Any] = {"t": "c", "s": sorted(self.woken), "o": outbox.bytes - self.outbox_mark,
                                   "a": archive.bytes - self.archive_mark}
        if changed:
            message["n"] = changed
        self.send(message)
        self.woken.clear()
        self.outbox_mark, self.archive_mark = outbox.bytes, archive.bytes

    def _changed(self) -> dict[str, list[list[Any]]]:
        """The counter series whose value the parent does not have yet, as ``name: [[labels, value]]``."""
        changed: dict[str, list[list[Any]]] = {}
        sent = self.sent
        for counter in self.counters:
            for labels, value in counter.values.items():
                if sent.get((counter.name, labels)) != value:
                    sent[(counter.name, labels)] = value
                    changed.setdefault(counter.name, []).append([list(labels), value])
        return changed

    def budget(self, outbox_bytes: int) -> None:
        """The outbox size the parent sees (this worker's reported commits included, the publishers' deletes too)."""
        # What this worker committed since its last report is not in the parent's figure yet.
        unreported = self.rt.outbox.bytes - self.outbox_mark
        self.outbox_mark = outbox_bytes
        self.rt.outbox.bytes = outbox_bytes + unreported

    def stats(self) -> None:
        """Every counter and the sources' state (every ``REPORT_EVERY_S``, and when the worker stops)."""
        for counter in self.counters:
            for labels, value in counter.values.items():
                self.sent[(counter.name, labels)] = value
        self.send({"t": "stats",
                   "counters": {c.name: [[list(k), v] for k, v in c.values.items()] for c in self.counters},
                   "sources": {n: s.status.to_json() for n, s in self.rt.sources.items()}})


def run_worker(config: GatewayConfig, index: int, control_fd: int) -> int:
    """The main of worker process ``index`` (``jonction run --worker-index``): ingestion only, until SIGTERM."""
    SHARED_PORTS.set(True)
    # Ctrl-C reaches the whole process group: the parent stops the workers itself (SIGTERM), in
    # order, and must not mistake a worker that stopped on its own for one that died.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(_worker(config, index, control_fd))


def settle_gc() -> None:
    """Raise the collector's young threshold and freeze what start-up allocated (schemas, adapters).

    A message allocates a few hundred short-lived objects (payload, entities, validation); with
    CPython's default threshold (700) a worker ran a young collection every few messages, and each
    full collection walked the validators' and adapters' tables again. Frozen objects are never
    scanned, and nothing frozen here is garbage: the worker keeps it until it exits.
    """
    tune_gc()
    gc.freeze()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (None: asyncio's own).

    A worker spends most of its time in the event loop and the HTTP transport: uvloop's, written
    in C over libuv, costs less per request than asyncio's selector loop.
    """
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _worker(config: GatewayConfig, index: int, control_fd: int) -> int:
    from gateway.contract import discover
    from gateway.runtime.app import build_runtime

    control = socket.socket(fileno=control_fd)
    reader, writer = await asyncio.open_unix_connection(sock=control, limit=LINE_LIMIT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    adapters = discover()
    async with aiohttp.ClientSession() as http:
        rt = build_runtime(config, adapters, http=http, storage=None, publishing=False)
        settle_gc()
        rt.db.leave_checkpoints()
        link = _ParentLink(rt, writer)
        rt.outbox.on_commit = link.committed
        tasks = [asyncio.create_task(_hear(rt, link, reader, stop, index), name="control"),
                 asyncio.create_task(_report(link), name="report")]
        # Without its link to the parent a worker must not go on, whatever ended the link's task.
        tasks[0].add_done_callback(lambda _: stop.set())
        try:
            if rt.pipeline.shared is not None:
                with contextlib.suppress(Unavailable):  # logged; claims connect again when messages come
                    await rt.pipeline.shared.open()
            for src in config.sources:
                if src.enabled and src.name in _shared_names(config, adapters):
                    rt.start_source(worker_source(src, index))
            rt.ready = True
            link.send({"t": "ready", "pid": os.getpid()})
            log.info("worker %d started", index, extra={"worker": index, "sources": sorted(rt.sources)})
            await stop.wait()
        finally:
            rt.ready = False
            # Listeners close and finish the requests they hold; what they accepted is committed.
            await asyncio.gather(*(s.stop() for s in rt.sources.values()), return_exceptions=True)
            await rt.pipeline.aclose()
            link.report_commits()
            link.stats()
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()
            rt.db.close()
    log.info("worker %d stopped", index, extra={"worker": index})
    return 0


def _shared_names(config: GatewayConfig, adapters: Mapping[str, type[Adapter]]) -> frozenset[str]:
    return frozenset(s.name for s in config.sources
                     if s.enabled and s.adapter in adapters and sharing(s, adapters[s.adapter]) is not None)


async def _hear(rt: Runtime, link: _ParentLink, reader: asyncio.StreamReader, stop: asyncio.Event,
                index: int) -> None:
    """Messages from the parent; its end closing (the parent died) stops this worker."""
    while True:
        try:
            line = await reader.readline()
        except (ConnectionError, OSError, ValueError) as exc:
            # A parent killed with reports still unread resets the link (ECONNRESET) instead of
            # closing it: that is its death too. A worker left running would keep its share of the
            # push port (SO_REUSEPORT) and take connections no one answers.
            line = b""
            log.debug("worker %d: control link: %s", index, exc)
        if not line:
            if not stop.is_set():
                log.warning("worker %d: the parent process is gone; stopping", index)
                stop.set()
            return
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("worker %d: unreadable control message", index)
            continue
        kind = message.get("t")
        if kind == "budget":
            link.budget(int(message["o"]))
        elif kind == "restart":
            name = str(message.get("source"))
            src = next((s for s in rt.config.sources if s.name == name and s.enabled), None)
            if src is not None and name in rt.sources:
                if src.routing is not None:
                    try:  # the parent read the same files just before and answered the operator
                        src.routing = await asyncio.to_thread(src.routing.reloaded)
                    except ConfigInvalid as exc:
                        log.warning("worker %d: routing of %s kept: %s", index, name, exc)
                await rt.sources[name].stop()
                log.info("source %s restarted on request", name, extra={"source": name, "worker": index})
                rt.start_source(worker_source(src, index))


async def _report(link: _ParentLink) -> None:
    while True:
        await asyncio.sleep(REPORT_EVERY_S)
        link.stats()


def worker_command(argv: Sequence[str]) -> tuple[str, ...]:
    """The command line of a worker: this interpreter running the CLI with the parent's arguments."""
    return (sys.executable, "-m", "gateway.cli", *argv)


async def workers_handler(request: web.Request) -> web.Response:
    """``GET /admin/workers``: the ingestion worker processes (pid, running, restarts, sources)."""
    rt = request.app[RUNTIME]
    if isinstance(rt, PoolRuntime) and rt.pool is not None:
        return web.json_response(rt.pool.describe())
    return web.json_response({"workers": [], "sharedSources": []})
