"""Key store: one async interface (:class:`Store`), SQLite and PostgreSQL behind it.

``await open_store(config.store.url)`` connects and creates or migrates the schema.
"""

from __future__ import annotations

from gateway.config import ConfigError
from gateway.store.base import (
    Activity,
    AuditFilter,
    KeyFilter,
    MfaEnrolment,
    Page,
    Store,
    StoreError,
    Transaction,
    UsageCount,
)

__all__ = ["Activity", "AuditFilter", "KeyFilter", "MfaEnrolment", "Page", "Store",
           "StoreError", "Transaction", "UsageCount", "open_store"]


async def open_store(url: str) -> Store:
    """``sqlite:///abs/path.db`` (everything after ``sqlite://`` is the file path, so
    ``sqlite://data/keys.db`` is relative) or ``postgresql://user@host:port/db``."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if not path:
            raise ConfigError("setting store.url: sqlite:// needs a file path")
        from gateway.store.sqlite import SQLiteStore

        return await SQLiteStore.open(path)
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    raise ConfigError("setting store.url: expected sqlite:///PATH or postgresql://...")
