"""The usage flush (last use and request counts): a write the store refuses is kept
for the next flush, uses recorded while a flush is under way (it yields to the event
loop as it goes) wait for the next one, and shutdown does not cut a flush short:
nothing is lost, nothing counted twice."""

from __future__ import annotations

import asyncio
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


class RefusesFirst(SQLiteStore):
    """A real SQLite store whose first write of each kind is refused."""

    calls: dict[str, int]

    async def touch_last_used(self, uses):  # type: ignore[no-untyped-def]
        self.calls["touch"] += 1
        if self.calls["touch"] == 1:
            raise StoreError("the store went away")
        await super().touch_last_used(uses)

    async def add_usage(self, counts):  # type: ignore[no-untyped-def]
        self.calls["usage"] += 1
        if self.calls["usage"] == 1:
            raise StoreError("the store went away")
        await super().add_usage(counts)


async def test_refused_and_concurrent_uses_reach_the_store_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage, "CHUNK", 2)  # yield to the loop every 2 keys
    store = await RefusesFirst.open(str(tmp_path / "keys.db"))
    store.calls = {"touch": 0, "usage": 0}
    try:
        manager = KeyManager(store, Keyring.generate(datetime.now(UTC)),
                             load_config(None, env={}).policy)
        now = datetime.now(UTC).replace(microsecond=0)
        ids = [(await manager.create(NewKey(principal=f"p{i}"), actor=Actor("cli:t"),
                                     now=now)).record.key_id for i in range(6)]
        recorder = UsageRecorder(store)
        used = now + timedelta(minutes=3)
        since = used - timedelta(minutes=1)

        def use(key_id: str, at: datetime = used) -> None:
            recorder.record(key_id, at.timestamp())
            for _ in range(3):
                recorder.count(key_id, "/api/", 200, "10.0.0.1", at.timestamp())

        async def stored() -> tuple[list[datetime | None], list[int]]:
            records = [await store.get_key(k) for k in ids]
            return ([r.last_used_at if r else None for r in records],
                    [(await store.activity(k, since)).total for k in ids])

        for key_id in ids[:5]:
            use(key_id)
        await recorder.flush()  # refused: both aggregates are kept
        assert recorder.flush_errors == 2
        assert await stored() == ([None] * 6, [0] * 6)

        flushing = asyncio.ensure_future(recorder.flush())
        await asyncio.sleep(0)  # the flush has converted two keys and yielded
        assert not flushing.done()
        use(ids[5])  # a request answered meanwhile
        await flushing
        # its last use came after that aggregate was taken: it waits for the next flush
        # (its counts were taken later, and went with this one)
        assert await stored() == ([used] * 5 + [None], [3] * 6)

        await recorder.flush()  # the last use that came during the flush, and only it
        assert await stored() == ([used] * 6, [3] * 6)
        await recorder.flush()
        assert await stored() == ([used] * 6, [3] * 6)

        # shutdown cancels the recorder's task, maybe while it flushes (at any of the
        # flush's yields to the loop, or while the store writes): the task's last flush
        # still writes everything, once
        for cut in range(1, 12):
            later = used + timedelta(minutes=cut)
            for key_id in ids:
                use(key_id, later)
            task = asyncio.ensure_future(recorder.run(0))
            for _ in range(cut):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await stored() == ([later] * 6, [3 * (cut + 1)] * 6), cut
    finally:
        await store.close()
