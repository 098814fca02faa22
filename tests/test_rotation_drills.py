"""The operator drills of issue 6, on two gateway instances sharing one PostgreSQL store
and one keyring: a zero-downtime rotation (API rotate → client switches → old key idle →
``keys revoke --wait-idle`` → old key refused) and a leaked-key revocation.

Instances learn of lifecycle changes through the store's ``key_changes`` poll (DESIGN
§3.2; ``[cache] change_poll = 100ms`` here). The Redis pub/sub fast path is another
issue's work, still being built; when it lands these drills hold with it as they do
without it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import pytest
import redis

from .admin_client import Key, admin, bootstrap_admin, data, until
from .conftest import ROOT
from .gateway_fixtures import GatewayProcess, Upstream, start_gateway, stop

EXTRA = '[usage]\nflush = "100ms"\n'


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream,
         postgres_url: str, redis_url: str
         ) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two instances on one PostgreSQL schema and one Redis (a prefix of their own):
    lifecycle changes reach the other instance by pub/sub, the poll behind it."""
    schema = f"drill_{secrets.token_hex(6)}"

    async def sql(text: str) -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(text)
        finally:
            await conn.close()

    asyncio.run(sql(f'CREATE SCHEMA "{schema}"'))
    store_url = f"{postgres_url}?search_path={schema}"
    prefix = f"gwtest:{secrets.token_hex(6)}:"
    extra = EXTRA + f'[redis]\nurl = "{redis_url}"\nprefix = "{prefix}"\n'
    a = start_gateway(tmp_path_factory.mktemp("gw-a"), upstream, extra, store_url=store_url)
    try:
        b = start_gateway(tmp_path_factory.mktemp("gw-b"), upstream, extra,
                          store_url=store_url, keyring=a.config_path.parent / "keyring.json")
    except BaseException:
        stop(a.proc)
        raise
    yield a, b
    stop(a.proc)
    stop(b.proc)
    asyncio.run(sql(f'DROP SCHEMA "{schema}" CASCADE'))
    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(match=prefix + "*"):
        client.delete(name)
    client.close()


@dataclass
class Client:
    """A client sending signed requests to both instances in turn, as fast as answers come."""

    instances: tuple[GatewayProcess, GatewayProcess]
    key: Key
    results: list[tuple[str, int]] = field(default_factory=list)  # (key ID, status)
    running: bool = True

    async def run(self) -> None:
        n = 0
        while self.running:
            key = self.key
            status, _ = await data(self.instances[n % 2], key, "GET", f"/api/flow/{n}")
            self.results.append((key.key_id, status))
            n += 1

    def count(self, key_id: str) -> int:
        return sum(1 for k, _ in self.results if k == key_id)


async def cli(gw: GatewayProcess, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, "--config", str(gw.config_path), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_zero_downtime_rotation(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = pair
    root = bootstrap_admin(a, "ops-rotation")
    status, doc = await admin(a, root, "POST", "/v1/keys",
                              {"principal": "svc-rotation", "scopes": ["api:read"]})
    assert status == 201
    old = Key.from_json(doc)
    client = Client((a, b), old)
    task = asyncio.create_task(client.run())
    try:
        await until(lambda: asyncio.sleep(0, client.count(old.key_id) >= 20), "traffic")
        # rotate through the API of the other instance; the old key keeps working
        status, doc = await admin(b, root, "POST", f"/v1/keys/{old.key_id}/rotate",
                                  {"grace": "1h"})
        assert status == 201, doc
        new = Key.from_json(doc)
        await until(lambda: asyncio.sleep(0, client.count(old.key_id) >= 30), "more traffic")
        client.key = new  # the client switches
        await until(lambda: asyncio.sleep(0, client.count(new.key_id) >= 20), "new-key traffic")
        # the operator (or a script) sees the old key go idle and the new one in use
        status, got = await admin(a, root, "GET", f"/v1/keys/{new.key_id}")
        assert got["status"] == "active"
        status, got = await admin(a, root, "GET", f"/v1/keys/{old.key_id}")
        assert got["status"] == "rotating" and got["requests_last_hour"] > 0
        code, out, err = await cli(a, "keys", "revoke", old.key_id, "--wait-idle", "1s",
                                   "--reason", "rotated", "--json")
        assert code == 0, err
        revoked = json.loads(out)
        assert (revoked["status"], revoked["revoke_reason"]) == ("revoked", "rotated")
        await until(lambda: asyncio.sleep(0, client.count(new.key_id) >= 60), "traffic after")
    finally:
        client.running = False
        await task
    assert client.results and {s for _, s in client.results} == {200}, [
        r for r in client.results if r[1] != 200][:5]
    # --wait-idle waited for idleness: the old key's last use came ≥ 1 s before revocation
    status, got = await admin(b, root, "GET", f"/v1/keys/{old.key_id}")
    last_used = datetime.fromisoformat(got["last_used_at"])
    assert (datetime.fromisoformat(got["revoked_at"]) - last_used).total_seconds() >= 1.0
    for gw in (a, b):  # and from then on every instance refuses the old key
        status, doc = await data(gw, old, "GET", "/api/after")
        assert (status, doc["error"]) == (401, "key_revoked")
        assert (await data(gw, new, "GET", "/api/after"))[0] == 200


async def test_leaked_key_drill(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = pair
    root = bootstrap_admin(a, "ops-security")
    status, doc = await admin(a, root, "POST", "/v1/keys",
                              {"principal": "svc-leaky", "scopes": ["api:*"]})
    leaked = Key.from_json(doc)
    for gw, target, times in ((a, "/api/orders", 4), (b, "/api/orders", 2),
                              (b, "/open/status", 3)):
        for _ in range(times):
            assert (await data(gw, leaked, "GET", target))[0] == 200
    # warm both caches, so refusal cannot come from a fresh store read
    assert (await data(a, leaked, "GET", "/api/warm"))[0] == 200
    assert (await data(b, leaked, "GET", "/api/warm"))[0] == 200

    status, doc = await admin(a, root, "POST", f"/v1/keys/{leaked.key_id}/revoke",
                              {"reason": "leaked"})
    assert (status, doc["revoke_reason"]) == (200, "leaked")
    revoked_at = time.monotonic()
    status, doc = await data(a, leaked, "GET", "/api/orders")
    assert (status, doc["error"]) == (401, "key_revoked")  # this instance: at once

    accepted_meanwhile = 0

    async def b_refuses() -> bool:
        nonlocal accepted_meanwhile
        status, _ = await data(b, leaked, "GET", "/api/orders")
        accepted_meanwhile += status == 200
        return status == 401
    await until(b_refuses, "instance B to refuse the key", timeout=2.0)
    assert time.monotonic() - revoked_at < 1.0  # one change poll (100 ms) and then some

    # who revoked it
    status, audit = await admin(b, root, "GET", f"/v1/audit?key_id={leaked.key_id}")
    (revocation,) = [e for e in audit["items"] if e["action"] == "key.revoked"]
    assert (revocation["actor_key_id"], revocation["actor_principal"], revocation["outcome"],
            revocation["source"], revocation["details"]) == (
        root.key_id, "ops-security", "success", "127.0.0.1", {"reason": "leaked"})
    # and every request it made in the last hour, by route, across both instances
    # (B may accept it until its next change poll: those requests are in the tally too),
    # the two refused after the revocation included
    want = {("/api/", 200): 4 + 2 + 2 + accepted_meanwhile, ("/open/", 200): 3,
            ("/api/", 401): 2}

    async def tallied() -> dict[str, Any] | None:
        _, act = await admin(b, root, "GET",
                                  f"/v1/keys/{leaked.key_id}/activity?since=1h")
        got = {(r["route"], r["status"]): r["count"] for r in act["routes"]}
        return act if got == want else None
    act = await until(tallied, "both instances' usage flush")
    total = 13 + accepted_meanwhile
    assert act["sources"] == [{"address": "127.0.0.1", "count": total}]
    status, got = await admin(a, root, "GET", f"/v1/keys/{leaked.key_id}")
    assert (got["status"], got["requests_last_hour"]) == ("revoked", total)

