"""The Redis tier: several gateway processes sharing PostgreSQL and Redis agree on
revocations (by pub/sub, in milliseconds), replays and rate limits; a Redis outage
degrades them without a failed request; Redis never holds a plaintext secret."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import redis
import redis.cluster

from gateway.kek import Keyring
from gateway.keys.lifecycle import Actor, KeyManager, NewKey
from gateway.keys.record import RateLimit
from gateway.proxy.keycache import KeyCache
from gateway.store.sqlite import SQLiteStore

from .conftest import free_port
from .gateway_fixtures import (
    GatewayProcess,
    Upstream,
    start_gateway,
    start_upstream,
    stop,
)
from .test_proxy_e2e import ours, send


@dataclass
class Fleet:
    gws: list[GatewayProcess]
    redis_url: str  # what the gateways were given
    client: Callable[[], Any]  # a synchronous client of the same Redis (or cluster)

    def __getitem__(self, i: int) -> GatewayProcess:
        return self.gws[i]

    def __iter__(self) -> Iterator[GatewayProcess]:
        return iter(self.gws)


def start_cluster(tmp: Path) -> tuple[list[int], list[subprocess.Popen[bytes]]]:
    """Three masters on loopback (each needs its bus port, port + 10000, free too)."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.fail("redis-server/redis-cli are not installed: apt-get install -y redis-server")
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port()
        if port < 55000 and port not in ports and bus_port_free(port + 10000):
            ports.append(port)
    procs = [subprocess.Popen([binary, "--port", str(p), "--bind", "127.0.0.1",
                               "--cluster-enabled", "yes", "--cluster-config-file",
                               str(tmp / f"nodes-{p}.conf"), "--save", "", "--appendonly",
                               "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
             for p in ports]
    for p in ports:
        wait_ping(p)
    subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas", "0", "--cluster-yes"], check=True,
                   capture_output=True, timeout=30)
    for _ in range(200):
        info = subprocess.run([cli, "-p", str(ports[0]), "cluster", "info"],
                              capture_output=True, text=True).stdout
        if "cluster_state:ok" in info:
            break
        time.sleep(0.05)
    return ports, procs


def bus_port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_ping(port: int) -> None:
    client = redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture(scope="module", params=["redis", "cluster"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          postgres_url: str, redis_url: str) -> Iterator[Fleet]:
    """Three instances on one PostgreSQL and one Redis — the shared server (with a
    prefix of their own) or a three-master Redis Cluster of this test's own. The
    change-log poll is slowed to 30 s so only pub/sub can explain a fast revocation."""
    tmp = tmp_path_factory.mktemp(f"fleet-{request.param}")
    prefix = f"gwtest:{secrets.token_hex(6)}:"
    nodes: list[subprocess.Popen[bytes]] = []
    if request.param == "cluster":
        ports, nodes = start_cluster(tmp)
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)

        def client() -> Any:
            return redis.cluster.RedisCluster(host="127.0.0.1", port=ports[0])
    else:
        url = redis_url

        def client() -> Any:
            return redis.Redis.from_url(redis_url)
    up = start_upstream(tmp)
    redis_section = f'[redis]\nurl = "{url}"\nprefix = "{prefix}"\n'
    gws = [start_gateway(tmp, up, store_url=postgres_url, extra=redis_section,
                         name=f"gw{i}", change_poll="30s") for i in range(3)]
    yield Fleet(gws, url, client)
    for gw in gws:
        stop(gw.proc)
    stop(up.proc)
    c = client()
    keys = list(c.scan_iter(match=prefix + "*"))
    for k in keys:
        c.delete(k)
    c.close()
    for node in nodes:
        node.kill()
        node.wait()


def prefix_of(gw: GatewayProcess) -> str:
    return next(line.split('"')[1] for line in gw.config_path.read_text().splitlines()
                if line.startswith("prefix = "))


async def status_of(gw: GatewayProcess, key, target: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    status, answer, _ = await send(gw, "GET", target, ours(gw, key, "GET", target))
    if status != 200:
        print("refused:", status, answer)
    return status, answer.get("error", "")


async def test_revocation_reaches_every_instance_by_pubsub(fleet: Fleet) -> None:
    key = await fleet[0].create_key()
    for gw in fleet:  # every instance has it cached
        assert (await status_of(gw, key, "/api/r/warm"))[0] == 200
    started = time.monotonic()
    done = fleet[1].cli("keys", "revoke", key.record.key_id, "--reason", "drill")
    assert done.returncode == 0, done.stderr
    refused_after = {}
    while len(refused_after) < 3 and time.monotonic() - started < 10:
        for i, gw in enumerate(fleet):
            if i not in refused_after and await status_of(gw, key, "/api/r/x") == (
                    401, "key_revoked"):
                refused_after[i] = time.monotonic() - started
    print(f"revoked → refused everywhere within {max(refused_after.values()):.3f} s "
          f"(CLI start-up included; poll interval 30 s)")
    assert len(refused_after) == 3 and max(refused_after.values()) < 5


async def test_a_replay_to_another_instance_is_refused(fleet: Fleet) -> None:
    key = await fleet[0].create_key()
    headers = ours(fleet[0], key, "GET", "/api/r/replay")
    status, _, _ = await send(fleet[0], "GET", "/api/r/replay", headers)
    assert status == 200
    for gw in fleet.gws[1:]:  # same bytes, other instance (same Host as signed)
        status, answer, _ = await send(gw, "GET", "/api/r/replay", headers)
        assert (status, answer["error"]) == (401, "replayed")


async def test_rate_limit_is_shared(fleet: Fleet) -> None:
    key = await fleet[0].create_key(rate_limit=RateLimit(rps=0.2, burst=2))
    results = [await status_of(fleet[i % 3], key, f"/api/r/rate-{i}") for i in range(4)]
    assert [s for s, _ in results[:2]] == [200, 200]
    assert results[2] == (429, "rate_limited") and results[3] == (429, "rate_limited")
    status, _, headers = await send(fleet[1], "GET", "/api/r/rate-h",
                                    ours(fleet[1], key, "GET", "/api/r/rate-h"))
    assert status == 429 and int(headers["Retry-After"]) >= 1


async def test_redis_holds_no_plaintext_secret(fleet: Fleet) -> None:
    key = await fleet[0].create_key()
    for gw in fleet:
        await status_of(gw, key, "/api/r/scan")
    secret = key.secret.reveal()
    client = fleet.client()
    try:
        names = list(client.scan_iter(match=prefix_of(fleet[0]) + "*"))
        dump = b"".join(n + (client.dump(n) or b"") for n in names)
    finally:
        client.close()
    assert any(key.record.key_id.encode() in n for n in names)  # the record is cached there
    pieces = {secret[i:i + 8] for i in range(len(secret) - 7)}
    assert not [p for p in pieces if p.encode() in dump]


# -- single flight -------------------------------------------------------------------------

class CountingStore(SQLiteStore):
    reads = 0

    async def get_key(self, key_id: str):  # type: ignore[no-untyped-def]
        CountingStore.reads += 1
        return await super().get_key(key_id)


async def one_key_and_a_cache(store: SQLiteStore) -> tuple[Any, KeyCache]:
    from gateway.config import load_config

    keyring = Keyring.generate(datetime.now(UTC))
    issued = await KeyManager(store, keyring, load_config(None, env={}).policy).create(
        NewKey(principal="p"), actor=Actor("cli:test"), now=datetime.now(UTC))
    cache = KeyCache(store, keyring, ttl=60, negative_ttl=10, max_entries=100,
                     serve_stale=900, inactivity=0)
    return issued, cache


async def test_one_store_read_for_1000_concurrent_first_requests(tmp_path: Path) -> None:
    store = await CountingStore.open(str(tmp_path / "keys.db"))
    try:
        issued, cache = await one_key_and_a_cache(store)
        CountingStore.reads = 0
        entries = await asyncio.gather(*(cache.get(issued.record.key_id) for _ in range(1000)))
        assert CountingStore.reads == 1
        assert all(e is not None and e.secret == issued.secret.hmac_key() for e in entries)
        await asyncio.gather(*(cache.get("gwk_unknownunknownunknown00000") for _ in range(1000)))
        assert CountingStore.reads == 2  # and one for an unknown key, then cached negatively
    finally:
        await store.close()


async def test_made_up_key_ids_do_not_push_real_keys_out_of_the_cache(tmp_path: Path) -> None:
    """Negative entries have a bound of their own: someone sending requests under
    thousands of invented key IDs must not turn every real key's next request into a
    store read."""
    store = await CountingStore.open(str(tmp_path / "keys.db"))
    try:
        issued, cache = await one_key_and_a_cache(store)  # max_entries=100
        key_id = issued.record.key_id
        assert await cache.get(key_id) is not None
        for i in range(1000):
            assert await cache.get(f"gwk_madeup{i:021d}") is None
        CountingStore.reads = 0
        assert await cache.get(key_id) is not None
        assert CountingStore.reads == 0  # still cached
        assert len(cache) == 1 + 100  # the real key, and the newest 100 unknown IDs
        assert await cache.get("gwk_madeup000000000000000000999") is None
        assert CountingStore.reads == 0  # the newest unknown ID is still cached...
        assert await cache.get("gwk_madeup000000000000000000000") is None
        assert CountingStore.reads == 1  # ...the oldest was let go
    finally:
        await store.close()


# -- a Redis outage --------------------------------------------------------------------------

class PrivateRedis:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: apt-get install -y redis-server")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)], stdout=subprocess.DEVNULL)
        wait_ping(self.port)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


async def readiness(gw: GatewayProcess) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.admin_url + "/readyz") as r:
            assert r.status == 200  # never 503 for Redis alone
            return str((await r.json())["status"])


async def test_redis_outage_degrades_without_failures(tmp_path: Path) -> None:
    result = await redis_outage(tmp_path, outage_seconds=2.5)  # bench/redis_outage.py: 10 s
    assert result["failed"] == 0 and result["ok"] > 30
    assert "degraded" in result["readiness"] and result["recovered"]
    assert result["replay_refused_during_outage"]  # replay protection continued, per instance


async def redis_outage(tmp_path: Path, outage_seconds: float) -> dict[str, Any]:
    """Steady signed traffic for cached keys while a private redis-server is killed
    for ``outage_seconds`` and restarted on the same port."""
    private = PrivateRedis(tmp_path)
    private.start()
    up: Upstream = start_upstream(tmp_path)
    gw = start_gateway(tmp_path, up, extra=f'[redis]\nurl = "redis://127.0.0.1:{private.port}/0"\n')
    try:
        keys = [await gw.create_key() for _ in range(3)]
        for key in keys:
            assert (await status_of(gw, key, "/api/o/warm"))[0] == 200
        assert await readiness(gw) == "ok"
        ok = failed = 0
        private.kill()
        outage_start = time.monotonic()
        replay_refused = False
        states = set()
        while time.monotonic() - outage_start < outage_seconds:
            for key in keys:
                status, _ = await status_of(gw, key, f"/api/o/{ok}")
                ok, failed = (ok + 1, failed) if status == 200 else (ok, failed + 1)
            states.add(await readiness(gw))
            if not replay_refused:
                headers = ours(gw, keys[0], "GET", "/api/o/replay")
                await send(gw, "GET", "/api/o/replay", headers)
                status, answer, _ = await send(gw, "GET", "/api/o/replay", headers)
                replay_refused = (status, answer.get("error")) == (401, "replayed")
        private.start()  # same port
        recovered = False
        for _ in range(100):
            for key in keys:
                status, _ = await status_of(gw, key, f"/api/o/after-{ok}")
                ok, failed = (ok + 1, failed) if status == 200 else (ok, failed + 1)
            if await readiness(gw) == "ok":
                recovered = True
                break
            await asyncio.sleep(0.1)
        print(f"Redis outage: {ok} requests ok, {failed} failed; readiness went {states}")
        return {"outage_seconds": outage_seconds, "ok": ok, "failed": failed,
                "readiness": sorted(states), "recovered": recovered,
                "replay_refused_during_outage": replay_refused}
    finally:
        stop(gw.proc)
        stop(up.proc)
        if private.proc and private.proc.poll() is None:
            private.kill()




class SlowStore(CountingStore):
    release: asyncio.Event

    async def get_key(self, key_id: str):  # type: ignore[no-untyped-def]
        record = await super().get_key(key_id)
        await SlowStore.release.wait()  # the read is done; the answer is still on its way
        return record


async def test_a_change_during_a_load_is_not_undone_by_it(tmp_path: Path) -> None:
    """A read that began before a revocation must not cache its pre-revocation record
    after the revocation's drop arrived."""
    store = await SlowStore.open(str(tmp_path / "keys.db"))
    try:
        issued, cache = await one_key_and_a_cache(store)
        SlowStore.release = asyncio.Event()
        CountingStore.reads = 0
        load = asyncio.create_task(cache.get(issued.record.key_id))
        await asyncio.sleep(0.05)
        cache.drop([issued.record.key_id])  # the revocation arrives mid-read
        SlowStore.release.set()
        assert await load is not None  # this request still gets an answer...
        assert issued.record.key_id not in cache  # ...but it is not kept
        await cache.get(issued.record.key_id)
        assert CountingStore.reads == 2  # the next request reads the store again
    finally:
        await store.close()
