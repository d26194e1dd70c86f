"""Settings of the embedded NGSI-LD store and the typed application keys its handlers share."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import web

from gateway.errors import ConfigInvalid
from gateway.secrets import from_env, from_file, mask
from gateway.store.base import Storage
from gateway.store.jsonld import ContextCache
from gateway.store.sharing import Policies

TOKEN_ENV = "JONCTION_STORE_TOKEN"
"""Environment variable holding a bearer token valid for every tenant."""


@dataclass(frozen=True)
class StoreSettings:
    """Everything the store app needs; build it from CLI options or the runtime's config."""

    data_dir: Path = Path("data")
    """The store file is ``<data_dir>/store.sqlite``."""
    host: str = "127.0.0.1"
    """Where the server is bound: authentication is required unless this is loopback."""
    base_path: str = "/ngsi-ld/v1"
    """Where the app is mounted (used to build Location and Link URLs)."""
    durability: Literal["full", "normal"] = "full"
    tokens: frozenset[str] = frozenset()
    """Bearer tokens valid for every tenant."""
    tenant_tokens: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Bearer tokens valid for one tenant only ("" is the default tenant)."""
    auth_required: bool | None = None
    """None: required for writes once a token is configured, or when not bound to loopback;
    True/False forces it."""
    protect_reads: bool = False
    """Require a token for reads too (when authentication is required)."""
    allowed_hosts: frozenset[str] = frozenset()
    """Names the store answers writes to besides loopback names and its bind address (its public
    host names, ``*`` for any): a write with another ``Host`` is refused as DNS rebinding."""
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 10_000
    """Most entities in one batch operation."""
    default_limit: int = 20
    max_limit: int = 1000
    max_ids: int = 1000
    """Most ids (or attribute names) in one query parameter."""
    max_geo_vertices: int = 1000
    """Most positions in a geoQ geometry (beyond: TooComplexQuery)."""
    max_id_pattern: int = 256
    temporal_instance_limit: int = 10_000
    """Most instances per attribute in one temporal answer; beyond, 206 with a ``date-time``
    Content-Range (CIM 009 V1.9.1 §6.3.10). The ETSI suite's pagination tests need 6 to 19."""
    allow_unfiltered_queries: bool = False
    """True: GET /entities (and POST /entityOperations/query) with no filter lists the tenant's
    entities, paginated (the demo's choice, for newcomers). False (default, CIM 009 §6.4.3.2): 400
    BadRequestData unless ``local=true``."""

    federation_timeout: float = 2.0
    """Seconds each context source (registration) has to answer a forwarded request; a slower one is
    reported in the NGSILD-Warning header and the rest of the answer returns."""
    identity: str = ""
    """This store's identity in the Via header of forwarded requests (loop detection); empty: a URN
    derived from the host name and the database (stable across restarts)."""

    sharing: Policies | None = None
    """Sharing policies (``--sharing FILE``): who besides a tenant's owner reads what (None: owners only
    are told apart by writes, reads are open as configured by ``protect_reads``)."""

    database: str | None = None
    """The database URL (``postgresql://…`` or ``sqlite:///path``); None: ``<data_dir>/store.sqlite``."""

    @property
    def store_path(self) -> Path:
        """The SQLite file."""
        return self.data_dir / "store.sqlite"

    @property
    def database_url(self) -> str | Path:
        """What :func:`gateway.store.backends.create_storage` opens: ``database`` or the SQLite file."""
        return self.database if self.database else self.store_path

    @property
    def loopback(self) -> bool:
        """True when bound to a loopback address only."""
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def requires_auth(self) -> bool:
        """Whether writes need a bearer token: once one is configured, on loopback too."""
        if self.auth_required is not None:
            return self.auth_required
        return not self.loopback or bool(self.tokens) or any(self.tenant_tokens.values())

    def check(self) -> None:
        """Raise ConfigInvalid when the settings cannot work (auth required but no token)."""
        problems = []
        if self.requires_auth and not self.tokens and not any(self.tenant_tokens.values()):
            problems.append(
                f"the store is bound to {self.host!r} (not loopback) so writes need a bearer token: "
                f"set {TOKEN_ENV} or give --token-file"
            )
        if self.max_limit < 1 or self.default_limit < 1 or self.default_limit > self.max_limit:
            problems.append("default_limit must be between 1 and max_limit")
        if not 0 < self.federation_timeout <= 300:
            problems.append("federation_timeout must be between 0 and 300 seconds")
        if self.sharing is not None and not self.tokens and not any(self.tenant_tokens.values()):
            problems.append("a sharing policy tells owners from other readers by their store token: "
                            f"set {TOKEN_ENV} or give --token-file")
        if self.temporal_instance_limit < 1:
            problems.append("temporal_instance_limit must be at least 1")
        if problems:
            raise ConfigInvalid("store settings are invalid", problems)


def load_tokens(
    token_file: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """Tokens from ``$JONCTION_STORE_TOKEN`` and a file: ``TOKEN`` or ``TENANT TOKEN`` per line.

    ``#`` starts a comment; ``-`` as TENANT is the default tenant. Tokens are never logged.
    """
    everyone: set[str] = set()
    per_tenant: dict[str, set[str]] = {}
    from_environment = (from_env(TOKEN_ENV, TOKEN_ENV, environ=env, required=False) or "").strip()
    if from_environment:
        everyone.add(from_environment)
    if token_file is not None:
        text = from_file(token_file, "token file", allow_empty=True, strip=False)
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.split("#", 1)[0].strip()
            if not stripped:
                continue
            parts = stripped.split()
            if len(parts) == 1:
                everyone.add(parts[0])
            elif len(parts) == 2:
                tenant = "" if parts[0] == "-" else parts[0]
                per_tenant.setdefault(tenant, set()).add(parts[1])
            else:
                raise ConfigInvalid(f"{token_file}:{number}: expected 'TOKEN' or 'TENANT TOKEN'")
    for token in (*everyone, *(t for tokens in per_tenant.values() for t in tokens)):
        mask(token)
    return frozenset(everyone), {t: frozenset(v) for t, v in per_tenant.items()}


STORAGE_KEY = web.AppKey("jonction.store.storage", Storage)
"""The store's Storage; the runtime reads it to write through Python."""
SETTINGS_KEY = web.AppKey("jonction.store.settings", StoreSettings)
"""The StoreSettings the app was built with."""
CONTEXTS_KEY = web.AppKey("jonction.store.contexts", ContextCache)
"""The @context cache (bundled and hosted contexts)."""
READER_STORAGE: ContextVar[Storage | None] = ContextVar("jonction.store.reader_storage", default=None)
"""The Storage as the non-owner reader of the request being served may see it (set by the sharing
middleware for the request's task, ``gateway.store.readers``); None: the owner, or no policy."""
