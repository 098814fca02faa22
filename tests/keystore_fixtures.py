"""Fixtures for the key-store tests: a real store of each backend, isolated per test.

SQLite: a file in the test's tmp_path. PostgreSQL: a schema of the test's own in the
session database (``postgres_url``), selected through ``search_path`` and dropped
afterwards. Test modules import these names; pytest then finds the fixtures.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from gateway.config import PolicyConfig
from gateway.kek import Keyring
from gateway.keys.lifecycle import Actor, KeyManager
from gateway.store import Store, open_store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACTOR = Actor(principal="cli:tester")


@pytest.fixture
async def pg_dsn(postgres_url: str) -> AsyncIterator[str]:
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    yield f"{postgres_url}?search_path={schema}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'keys.db'}"
    return str(request.getfixturevalue("pg_dsn"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    yield s
    await s.close()


@pytest.fixture(scope="session")
def keyring() -> Keyring:
    return Keyring.generate(NOW)


@pytest.fixture
def policy() -> PolicyConfig:
    return PolicyConfig()


@pytest.fixture
def manager(store: Store, keyring: Keyring, policy: PolicyConfig) -> KeyManager:
    return KeyManager(store, keyring, policy)


__all__ = ["ACTOR", "NOW"]
