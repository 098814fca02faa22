"""Usage is flushed to the store in chunks (so a flush over 100,000 keys never holds the
event loop for long), and a chunk the store refuses is kept, with every chunk after
it, for the next flush: nothing is lost and nothing is counted twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.kek import Keyring
from gateway.keys.lifecycle import Actor, KeyManager, NewKey
from gateway.proxy import usage
from gateway.proxy.usage import UsageRecorder
from gateway.store import StoreError
from gateway.store.sqlite import SQLiteStore


class RefusesOnce(SQLiteStore):
    """A real SQLite store whose ``fail_call``-th write of each kind is refused."""

    fail_call = 2
    calls: dict[str, int]

    async def touch_last_used(self, uses):  # type: ignore[no-untyped-def]
        self.calls["touch"] += 1
        if self.calls["touch"] == self.fail_call:
            raise StoreError("the store went away")
        await super().touch_last_used(uses)

    async def add_usage(self, counts):  # type: ignore[no-untyped-def]
        self.calls["usage"] += 1
        if self.calls["usage"] == self.fail_call:
            raise StoreError("the store went away")
        await super().add_usage(counts)


async def test_a_refused_chunk_and_those_after_it_wait_for_the_next_flush(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage, "CHUNK", 2)
    store = await RefusesOnce.open(str(tmp_path / "keys.db"))
    store.calls = {"touch": 0, "usage": 0}
    try:
        manager = KeyManager(store, Keyring.generate(datetime.now(UTC)),
                             load_config(None, env={}).policy)
        now = datetime.now(UTC).replace(microsecond=0)
        ids = [(await manager.create(NewKey(principal=f"p{i}"), actor=Actor("cli:t"),
                                     now=now)).record.key_id for i in range(5)]
        recorder = UsageRecorder(store)
        used = now + timedelta(minutes=3)
        for key_id in ids:  # 5 keys: chunks of 2, 2 and 1; the second one is refused
            recorder.record(key_id, used.timestamp())
            for _ in range(3):
                recorder.count(key_id, "/api/", 200, "10.0.0.1", used.timestamp())
        await recorder.flush()
        assert recorder.flush_errors == 2  # one for last use, one for the counts
        seen = [(await store.get_key(k)).last_used_at for k in ids]  # type: ignore[union-attr]
        assert seen == [used, used, None, None, None]
        since = used - timedelta(minutes=1)
        assert [(await store.activity(k, since)).sources for k in ids] == \
            [[("10.0.0.1", 3)]] * 2 + [[]] * 3

        await recorder.flush()  # the store answers again: the rest goes in, once
        seen = [(await store.get_key(k)).last_used_at for k in ids]  # type: ignore[union-attr]
        assert seen == [used] * 5
        assert [(await store.activity(k, since)).sources for k in ids] == [[("10.0.0.1", 3)]] * 5
        await recorder.flush()  # nothing left over to write twice
        assert [(await store.activity(k, since)).sources for k in ids] == [[("10.0.0.1", 3)]] * 5
    finally:
        await store.close()
