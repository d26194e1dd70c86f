"""Conformance from the console: run a shipped profile against a target, follow it, read the reports.

The gateway never imports the conformance checker (the layer rules): it runs the ``jonction check``
and ``jonction clause`` commands as child processes, as an operator would, and reads what they
write. Progress comes from the checker's log (one INFO line per check started) against the list of
checks the profile selects (``jonction check --list``). One run at a time; each keeps its folder
under ``<data_dir>/conformance/`` with ``run.json``, the reports and the clause in French and English.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from gateway.crosssite import json_content_type
from gateway.problems import problem_response

log = logging.getLogger("jonction.console")

PROFILE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
"""A shipped profile's name (files are not accepted from a web page)."""
MAX_TARGET: Final = 2000
FILES: Final = {
    "report.json": "application/json",
    "report.junit.xml": "application/xml",
    "report.html": "text/html",
    "clause.fr.html": "text/html",
    "clause.en.html": "text/html",
}
"""What a run folder holds and may be served."""
REPORT_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
"""A report is a self-contained page with inline styles and no script: that, and nothing else."""
RUN_ID: Final = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[a-z0-9-]+$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def jonction_command() -> list[str]:
    """How to start the ``jonction`` command of this very installation."""
    script = Path(sys.executable).parent / "jonction"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]


@dataclass
class Run:
    """One conformance run and how far it got."""

    id: str
    profile: str
    target: str
    lang: str
    started: str
    status: str = "running"
    """running, done (the reports are there), or failed (see ``message``)."""
    total: int = 0
    done: int = 0
    current: str = ""
    exit_code: int | None = None
    message: str = ""
    files: list[str] = field(default_factory=list)


@dataclass
class Conformance:
    """The runs of one gateway (on disk) and the one in progress (in memory)."""

    folder: Path
    runs: dict[str, Run] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def _load(self) -> list[Run]:
        found: dict[str, Run] = {}
        if self.folder.is_dir():
            for meta in sorted(self.folder.glob("*/run.json")):
                with contextlib.suppress(ValueError, TypeError, OSError):
                    doc = json.loads(meta.read_text(encoding="utf-8"))
                    found[doc["id"]] = Run(**doc)
        found.update(self.runs)
        return sorted(found.values(), key=lambda r: r.id, reverse=True)

    def get(self, run_id: str) -> Run | None:
        """One run, in progress or finished."""
        return next((r for r in self._load() if r.id == run_id), None)

    def listing(self) -> list[dict[str, Any]]:
        """Every run, newest first."""
        return [asdict(r) for r in self._load()]

    @property
    def busy(self) -> bool:
        """True while a run is in progress."""
        return self.task is not None and not self.task.done()

    def start(self, profile: str, target: str, lang: str, token: str | None) -> Run:
        """Start a run in the background (the caller checked the inputs and that none is running)."""
        now = time.gmtime()
        run = Run(f"{time.strftime('%Y%m%dT%H%M%SZ', now)}-{profile}", profile, target, lang,
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", now))
        self.runs[run.id] = run
        self.task = asyncio.create_task(self._execute(run, token), name=f"conformance:{run.id}")
        return run

    async def _execute(self, run: Run, token: str | None) -> None:
        out = self.folder / run.id
        try:
            out.mkdir(parents=True, exist_ok=True)
            env = {k: v for k, v in os.environ.items() if k != "JONCTION_CHECK_TOKEN"}
            if token:
                env["JONCTION_CHECK_TOKEN"] = token  # handed to the child only, never written anywhere
            base = jonction_command()
            listed = await _output([*base, "check", "--profile", run.profile, "--list"], env)
            ids = [line.split("\t", 1)[0] for line in listed.splitlines() if "\t" in line]
            run.total = len(ids)
            await self._check(run, [*base, "check", "--profile", run.profile, "--target", run.target,
                                           "--out", str(out), "--lang", run.lang], env, set(ids))
            for lang in ("fr", "en"):
                await _output([*base, "clause", "--profile", run.profile, "--lang", lang, "--format", "html",
                                      "--out", str(out / f"clause.{lang}.html")], env)
            run.status = "done" if (out / "report.json").exists() else "failed"
        except Exception as exc:  # a failed run is reported on its page, never a crash of the gateway
            run.status = "failed"
            run.message = str(exc)[:2000]
        finally:
            run.files = [name for name in FILES if (out / name).exists()]
            run.current = ""
            with contextlib.suppress(OSError):
                (out / "run.json").write_text(json.dumps(asdict(run), indent=1), encoding="utf-8")

    async def _check(self, run: Run, argv: list[str], env: dict[str, str], ids: set[str]) -> None:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stderr is not None

        async def follow(stream: asyncio.StreamReader) -> None:
            async for raw in stream:
                line = raw.decode("utf-8", "replace").strip()
                with contextlib.suppress(ValueError, AttributeError):
                    message = str(json.loads(line).get("msg", ""))
                    cid = message.split(" ", 1)[0]
                    if cid in ids:
                        run.done = min(run.done + 1, run.total)
                        run.current = message[:200]

        try:
            summary = asyncio.create_task(proc.stdout.read())
            await follow(proc.stderr)
            text = (await summary).decode("utf-8", "replace")
            run.exit_code = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled (the gateway stops): the check stops too
                proc.kill()
                await proc.wait()
        run.message = text.strip()[:4000]
        if run.exit_code in (0, 1):
            run.done = run.total


async def _output(argv: list[str], env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-6:])}: {err.decode('utf-8', 'replace').strip()[-1000:]}")
    return out.decode("utf-8", "replace")


def _problem(status: int, detail: str) -> web.Response:
    return problem_response(status, {400: "Bad Request", 404: "Not Found", 409: "Conflict",
                                     403: "Forbidden"}.get(status, "Error"), detail)


def routes(conf: Conformance, guard: Callable[[Handler], Handler],
           refusal: Callable[[web.Request], str | None]) -> list[web.RouteDef]:
    """The console's conformance endpoints, each behind ``guard`` (a session or the bearer token)."""

    async def listing(request: web.Request) -> web.Response:  # noqa: ARG001  # aiohttp handler signature
        return web.json_response({"running": conf.busy, "runs": conf.listing()})

    async def start(request: web.Request) -> web.Response:
        reason = refusal(request)
        if reason is None and not json_content_type(request.headers.get("Content-Type")):
            reason = "the body must be JSON (Content-Type: application/json)"
        if reason is not None:
            return _problem(403, reason)
        try:
            body = await request.json()
        except ValueError:
            return _problem(400, "body is not JSON")
        if not isinstance(body, dict):
            return _problem(400, "body must be an object")
        profile, target = body.get("profile"), body.get("target")
        lang, token = body.get("lang", "en"), body.get("token")
        if not isinstance(profile, str) or not PROFILE.match(profile):
            return _problem(400, "/profile: the name of a shipped profile (lowercase letters, digits, dashes)")
        if not isinstance(target, str) or len(target) > MAX_TARGET or urlsplit(target).scheme not in ("http", "https") \
                or not urlsplit(target).hostname:
            return _problem(400, "/target: an http:// or https:// URL of an NGSI-LD API")
        if lang not in ("en", "fr"):
            return _problem(400, "/lang: en or fr")
        if token is not None and (not isinstance(token, str) or len(token) > 4096):
            return _problem(400, "/token: a string")
        if conf.busy:
            return _problem(409, "a conformance run is in progress: wait for it to end")
        run = conf.start(profile, target, lang, token or None)
        return web.json_response(asdict(run), status=202)

    async def one(request: web.Request) -> web.Response:
        run = conf.get(request.match_info["id"])
        if run is None:
            return _problem(404, "no such run")
        return web.json_response(asdict(run))

    async def file(request: web.Request) -> web.StreamResponse:
        run_id, name = request.match_info["id"], request.match_info["name"]
        if not RUN_ID.match(run_id) or name not in FILES:
            return _problem(404, "no such file")
        path = conf.folder / run_id / name
        if not path.is_file():
            return _problem(404, "no such file")
        headers = {"X-Content-Type-Options": "nosniff"}
        if FILES[name] == "text/html":
            headers["Content-Security-Policy"] = REPORT_CSP
        if request.query.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="{run_id}-{name}"'
        return web.Response(body=path.read_bytes(), content_type=FILES[name], charset="utf-8", headers=headers)

    return [
        web.get("/console/api/conformance", guard(listing)),
        web.post("/console/api/conformance", guard(start)),
        web.get("/console/api/conformance/{id}", guard(one)),
        web.get("/console/api/conformance/{id}/{name}", guard(file)),
    ]


def conformance_ctx(conf: Conformance) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that stops a run still going when the gateway stops."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        yield
        if conf.task is not None and not conf.task.done():
            conf.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conf.task

    return ctx
