"""The events outbox in the store contract (issue 11), on both backends: events commit
with their change or not at all, a delivery is leased to one claimant at a time,
redelivery makes an event due again, webhook secrets are wrapped and re-wrapped with the
KEK, and the retry schedule backs off."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.config import EventsConfig, PolicyConfig
from gateway.events.deliver import after_attempt, signed_delivery
from gateway.events.manage import add_webhook, redeliver, remove_webhook, unwrap_secret
from gateway.events.model import EventFilter
from gateway.kek import Keyring, UnwrapError
from gateway.keys.lifecycle import KeyManager, NewKey
from gateway.keys.rewrap import rewrap_all
from gateway.store import Store

from .keystore_fixtures import ACTOR, NOW

URL = "http://127.0.0.1:9/hook"


async def test_every_change_writes_its_event_and_a_delivery_per_subscribed_webhook(
        store: Store, manager: KeyManager, keyring: Keyring) -> None:
    everything, _ = await add_webhook(store, keyring, URL, [], actor=ACTOR, now=NOW)
    revocations, _ = await add_webhook(store, keyring, URL, ["key.revoked"], actor=ACTOR,
                                       now=NOW)
    issued = await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    key_id = issued.record.key_id
    new = await manager.rotate(key_id, actor=ACTOR, now=NOW)
    await manager.renew(new.record.key_id, actor=ACTOR, now=NOW, expiry=86400.0 * 10)
    await manager.revoke(key_id, actor=ACTOR, now=NOW, reason="leaked")
    found = await store.list_events(EventFilter())
    assert [(e.event.type, e.event.target) for e in found] == [
        ("key.created", key_id), ("key.rotated", key_id),
        ("key.created", new.record.key_id), ("key.renewed", new.record.key_id),
        ("key.revoked", key_id)]
    assert {d.webhook_id for d in found[-1].deliveries} == {everything.id, revocations.id}
    assert [d.webhook_id for d in found[0].deliveries] == [everything.id]
    assert found[1].event.payload["new_key_id"] == new.record.key_id
    assert found[-1].event.payload["reason"] == "leaked"
    assert all("secret" not in e.event.payload["key"] for e in found)
    assert {e.status for e in found} == {"pending"}
    assert [e.event.id for e in await store.list_events(EventFilter(target=new.record.key_id,
                                                                    type="key.renewed"))] \
        == [found[3].event.id]


async def test_a_delivery_is_leased_to_one_claimant_until_it_lapses(
        store: Store, manager: KeyManager, keyring: Keyring) -> None:
    await add_webhook(store, keyring, URL, [], actor=ACTOR, now=NOW)
    await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    lease = NOW + timedelta(seconds=20)
    (mine,) = await store.claim_deliveries(NOW, lease, "a", 10)
    assert await store.claim_deliveries(NOW + timedelta(seconds=19), lease, "b", 10) == []
    assert len(await store.claim_deliveries(lease, lease + timedelta(seconds=20), "b", 10)) == 1
    delivery, event, _ = mine
    failed = after_attempt(delivery, status=500, error=None, now=NOW, config=EventsConfig())
    assert not await store.finish_delivery(failed, "a")  # a lost its lease to b
    assert await store.finish_delivery(failed, "b")
    (stored,) = await store.list_events(EventFilter(status="pending"))
    assert stored.deliveries[0].attempts == 1 and stored.deliveries[0].last_status == 500
    done = after_attempt(stored.deliveries[0], status=204, error=None, now=NOW,
                         config=EventsConfig())
    retry_at = failed.next_attempt_at
    assert len(await store.claim_deliveries(retry_at, retry_at + timedelta(seconds=20), "c",
                                            10)) == 1
    assert await store.finish_delivery(done, "c")
    (delivered,) = await store.list_events(EventFilter(status="delivered"))
    assert delivered.event.id == event.id and delivered.deliveries[0].attempts == 2
    assert await store.list_events(EventFilter(status="pending")) == []


async def test_redeliver_makes_an_event_due_again_and_removing_a_webhook_drops_its_rows(
        store: Store, manager: KeyManager, keyring: Keyring) -> None:
    webhook, _ = await add_webhook(store, keyring, URL, ["key.created"], actor=ACTOR, now=NOW)
    await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    (claimed,) = await store.claim_deliveries(NOW, NOW + timedelta(seconds=20), "a", 10)
    gave_up = after_attempt(claimed[0], status=None, error="ConnectionRefusedError", now=NOW,
                            config=EventsConfig(max_attempts=1))
    assert gave_up.state == "failed"
    assert await store.finish_delivery(gave_up, "a")
    (failed,) = await store.list_events(EventFilter(status="failed"))
    again = await redeliver(store, failed.event.id, actor=ACTOR, now=NOW)
    assert again.status == "pending" and again.deliveries[0].attempts == 0
    assert [a.action for a in await store.list_audit(target=failed.event.id)] == [
        "event.redelivered"]
    assert await remove_webhook(store, webhook.id, actor=ACTOR, now=NOW)
    assert not await remove_webhook(store, webhook.id, actor=ACTOR, now=NOW)
    assert (await store.get_event(failed.event.id)).deliveries == ()  # type: ignore[union-attr]
    assert await store.list_webhooks() == []


async def test_webhook_secrets_are_wrapped_and_follow_a_kek_rotation(
        store: Store, manager: KeyManager, keyring: Keyring) -> None:
    webhook, secret = await add_webhook(store, keyring, URL, [], actor=ACTOR, now=NOW)
    assert unwrap_secret(keyring, webhook) == secret.hmac_key()
    assert repr(secret).count("…") == 1 and secret.reveal() not in repr(secret)
    ring = keyring.with_new_version(NOW)
    ring = ring.activated(ring.versions[-1])
    assert await rewrap_all(store, ring, actor=ACTOR, now=lambda: NOW) == 1
    (stored,) = await store.list_webhooks()
    assert stored.wrapped.kek_version == ring.current
    assert unwrap_secret(ring, stored) == secret.hmac_key()
    with pytest.raises(UnwrapError):  # bound to its own purpose: not a key secret
        ring.unwrap_secret(stored.id, stored.wrapped)
    (rotated,) = await store.list_events(EventFilter(type="kek.rotated"))
    assert rotated.event.payload["kek_version"] == ring.current
    assert await store.count_by_kek_version() == {ring.current: 1}


async def test_bad_webhook_urls_and_unknown_event_types_are_refused(
        store: Store, keyring: Keyring) -> None:
    from gateway.keys.errors import PolicyViolation
    for url, events in (("ftp://x/", []), ("http://user:pw@h/", []), ("http://h/", ["key.x"])):
        with pytest.raises(PolicyViolation):
            await add_webhook(store, keyring, url, events, actor=ACTOR, now=NOW)
    assert await store.list_webhooks() == []


def test_retries_back_off_exponentially_up_to_the_cap_then_give_up() -> None:
    from gateway.events.model import Delivery
    config = EventsConfig(retry_base=1.0, retry_max=5.0, max_attempts=5)
    d = Delivery(event_seq=1, webhook_id="whk_0", state="pending", attempts=0,
                 next_attempt_at=NOW)
    waits = []
    for _ in range(5):
        d = after_attempt(d, status=503, error=None, now=NOW, config=config)
        waits.append((d.next_attempt_at - NOW).total_seconds())
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0] and d.state == "failed"
    assert d.last_error == "HTTP 503"


def test_a_delivery_is_signed_over_the_required_components(policy: PolicyConfig) -> None:
    from gateway.events.model import Event, Webhook
    from gateway.keys.record import WrappedSecret
    hook = Webhook(id="whk_0123456789abcdef", url="https://hooks.example/in?x=1", events=(),
                   created_at=NOW, created_by="cli:test", wrapped=WrappedSecret(1, b"", b""))
    event = Event(type="key.revoked", target="gwk_x", occurred_at=NOW, payload={})
    headers, body = signed_delivery(event, hook, b"secret", NOW.timestamp())
    named = dict(headers)
    assert named["Host"] == "hooks.example" and named["Gateway-Event-Id"] == event.id
    assert named["Content-Digest"].startswith("sha-256=:")
    assert named["Signature-Input"].startswith(
        'sig1=("@method" "@authority" "@path" "@query" "content-digest" "content-type" '
        '"gateway-event-id");created=')
    assert 'keyid="whk_0123456789abcdef";alg="hmac-sha256"' in named["Signature-Input"]
    assert signed_delivery(event, hook, b"secret", NOW.timestamp())[1] == body
