"""The PostgreSQL/PostGIS backend of the store (optional extra ``jonction[postgresql]``: asyncpg)."""

from __future__ import annotations

from gateway.store.postgres.storage import PostgresStorage

__all__ = ["PostgresStorage"]
