"""A throw-away PostgreSQL 15 + PostGIS 3 server for the tests, run from the Debian binaries.

``initdb`` in a temporary folder, ``pg_ctl start`` on a free loopback port (fsync off: the data
dies with the test session), one template database with PostGIS, and a fresh database per test
cloned from it. ``initdb`` refuses to run as root, so under root (CI) the server runs as the
``nobody`` user through ``runuser``. ``unavailable()`` names why the tests must skip instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import free_port

PG_BIN = Path(os.environ.get("JONCTION_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
"""Where the server binaries are (Debian package ``postgresql-15``)."""
POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")
"""Present when the Debian package ``postgresql-15-postgis-3`` is installed."""
USER = "jonction"
TEMPLATE = "jonction_template"


def unavailable() -> str | None:
    """Why a test PostgreSQL cannot run here (None when it can)."""
    for tool in ("initdb", "pg_ctl", "createdb"):
        if not (PG_BIN / tool).is_file():
            return f"PostgreSQL 15 binaries absent ({PG_BIN / tool}): apt-get install postgresql"
    if not POSTGIS_CONTROL.is_file():
        return "PostGIS absent: apt-get install postgresql-15-postgis-3"
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg absent: pip install 'jonction[postgresql]'"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb refuses root"
    return None


class PostgresServer:
    """One server for the session; ``new_database()`` hands each test its own database URL."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="jonction-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._numbers = itertools.count(1)
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", "nobody", "--", *args] if self._as_root else list(args)
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, cwd=self.root)

    def url(self, database: str) -> str:
        """The connection URL of one database of this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """initdb, start, and build the template database (PostGIS created once)."""
        if self._as_root:
            # the server runs as nobody: it must own its folder, and reach it
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self.root.chmod(0o700)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        # Tests do not need durability; a benchmark of writes does (JONCTION_PG_DURABLE=1: the defaults).
        fast = "" if os.environ.get("JONCTION_PG_DURABLE") == "1" else (
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off ")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {fast}-c max_connections=200"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")
        self._createdb(TEMPLATE, None)
        asyncio.run(self._prepare_template())

    async def _prepare_template(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url(TEMPLATE))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        finally:
            await conn.close()

    def _createdb(self, name: str, template: str | None) -> None:
        args = [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER]
        if template is not None:
            args += ["-T", template]
        self._run(*args, name)

    def new_database(self) -> str:
        """A new empty database (PostGIS ready); its URL."""
        name = f"t{next(self._numbers)}"
        self._createdb(name, TEMPLATE)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass  # never started, or already gone
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``python -m tests.postgres COMMAND...``: run COMMAND with a throw-away PostgreSQL database.

    The database URL is in ``$JONCTION_STORE_DATABASE`` (which ``jonction store`` reads), so that a
    tool driving ``jonction store`` (the ETSI suite runner in CI) runs against PostgreSQL.
    """
    reason = unavailable()
    if reason is not None:
        print(f"tests.postgres: {reason}", file=sys.stderr)
        return 2
    if not argv:
        print("usage: python -m tests.postgres COMMAND [ARG...]", file=sys.stderr)
        return 2
    server = PostgresServer()
    try:
        server.start()
        env = {**os.environ, "JONCTION_STORE_DATABASE": server.new_database()}
        return subprocess.run(argv, env=env, check=False).returncode
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
