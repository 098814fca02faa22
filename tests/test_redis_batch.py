"""The hot path's Redis batches on their raw RESP connection (gateway/proxy/resp.py):
replay and rate-limit answers from a real server, the URL's password and database
honoured, and every way a server can let a batch down — refused, stalled, restarted
without its script — ending in ``RedisDown`` (the per-process fallback) within the
timeout, never a hang or a wrong answer."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis

from gateway.config import RedisConfig
from gateway.proxy.shared import RedisDown, SharedTier

from .conftest import free_port


def private_redis(tmp: Path, *args: str) -> tuple[int, subprocess.Popen[bytes]]:
    """A redis-server of the test's own (``args``: e.g. ``--requirepass PW``)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp), *args],
                            stdout=subprocess.DEVNULL)
    password = args[1] if args[:1] == ("--requirepass",) else None
    client = redis.Redis(port=port, password=password)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return port, proc


async def test_replay_and_rate_limit_answers_in_the_urls_database(tmp_path: Path) -> None:
    port, proc = private_redis(tmp_path, "--requirepass", "s3cret-pass")
    tier = SharedTier(RedisConfig(url=f"redis://:s3cret-pass@127.0.0.1:{port}/3",
                                  prefix="t:"))
    try:
        token = secrets.token_bytes(16)
        # one tick, one pipeline: the second SET NX of the same token loses
        first, second = await asyncio.gather(tier.claim(token, 60), tier.claim(token, 60))
        assert (first, second) == (b"OK", None)
        assert await tier.claim(secrets.token_bytes(16), 60) == b"OK"
        assert await tier.allow("gwk_rate", 1.0, 2) == (True, 0.0)  # loads the script
        # 1 request/s, burst 2: of three more in one pipeline, in order, one gets through
        answers = await asyncio.gather(*(tier.allow("gwk_rate", 1.0, 2) for _ in range(3)))
        assert [allowed for allowed, _ in answers] == [True, False, False]
        assert 0 < answers[1][1] <= 1.0  # seconds until the next one is allowed
        sync = redis.Redis(port=port, password="s3cret-pass", db=3)
        assert sync.exists(f"t:replay:{token.hex()}") == 1 and sync.pttl(
            f"t:replay:{token.hex()}") > 50_000
        assert redis.Redis(port=port, password="s3cret-pass", db=0).dbsize() == 0
        sync.close()
        assert tier.healthy and tier.errors == 0
    finally:
        await tier.close()
        proc.kill()
        proc.wait()


async def test_a_wrong_password_is_a_failed_batch_not_an_answer(tmp_path: Path) -> None:
    port, proc = private_redis(tmp_path, "--requirepass", "right")
    tier = SharedTier(RedisConfig(url=f"redis://:wrong@127.0.0.1:{port}/0", prefix="t:"))
    try:
        with pytest.raises(RedisDown):
            await tier.claim(secrets.token_bytes(16), 60)
        assert not tier.healthy
    finally:
        await tier.close()
        proc.kill()
        proc.wait()


@contextlib.asynccontextmanager
async def tier_against_own_server(serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                     Awaitable[None]]) -> AsyncIterator[SharedTier]:
    """A tier with a 0.3 s timeout, talking to a server of the test's own (``serve``)."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tier = SharedTier(RedisConfig(url=f"redis://127.0.0.1:{port}/0", prefix="t:"), timeout=0.3)
    try:
        yield tier
    finally:
        await tier.close()
        server.close()
        await server.wait_closed()


async def test_a_stalled_redis_fails_the_batch_within_the_timeout() -> None:
    closed = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):  # swallow every command, answer none
            pass
        closed.set()  # the gateway gave the connection up
        writer.close()

    async with tier_against_own_server(mute) as tier:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RedisDown):
            await asyncio.wait_for(tier.claim(secrets.token_bytes(16), 60), 5)
        assert loop.time() - started < 2  # the tier's own timeout, not the guard above
        assert not tier.healthy
        await asyncio.wait_for(closed.wait(), 5)  # late replies can reach nobody


async def test_a_redis_that_stalls_after_answering_fails_the_next_batch_in_time() -> None:
    # the first batch is answered; the one sent after it, on the same connection, is not
    async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"+OK\r\n")
        while await reader.read(65536):
            pass
        writer.close()

    async with tier_against_own_server(answers_once) as tier:
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(tier.claim(secrets.token_bytes(16), 60), 5) is not None
        await asyncio.sleep(0.2)  # inside the first batch's timeout, which was answered
        started = loop.time()
        with pytest.raises(RedisDown):
            await asyncio.wait_for(tier.claim(secrets.token_bytes(16), 60), 5)
        assert loop.time() - started < 2  # the tier's own timeout, not the guard above


async def test_a_restarted_redis_that_forgot_the_script_recovers(tmp_path: Path) -> None:
    port, proc = private_redis(tmp_path)
    tier = SharedTier(RedisConfig(url=f"redis://127.0.0.1:{port}/0", prefix="t:"))
    try:
        assert (await tier.allow("gwk_a", 100.0, 10))[0] is True
        redis.Redis(port=port).script_flush()  # what a restart does to loaded scripts
        with pytest.raises(RedisDown):  # this one falls back to the per-process limit...
            await tier.allow("gwk_a", 100.0, 10)
        assert (await tier.allow("gwk_a", 100.0, 10))[0] is True  # ...the next reloads it
        proc.kill()
        proc.wait()
        with pytest.raises(RedisDown):  # the server is gone: the connection's loss is seen
            await asyncio.wait_for(tier.claim(secrets.token_bytes(16), 60), 5)
    finally:
        await tier.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
