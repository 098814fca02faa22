"""Lifecycle events reach webhooks (issue 11, point 3), against real ``gateway serve``
processes: every delivery verifies under the independent ``http-message-signatures``
library (signature and Content-Digest), a receiver failing three times still gets the
event with the same ID and body, and an event committed before a SIGKILL is delivered
after the restart (the outbox)."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .admin_client import Key, admin, until
from .conftest import free_port
from .event_receiver import Receiver
from .gateway_fixtures import GatewayProcess, Upstream, start_gateway, stop

# tiny intervals so that retries take milliseconds, not minutes
EVENTS = """
[events]
deliver_interval = "50ms"
retry_base = "50ms"
retry_max = "200ms"
timeout = "1s"
"""


async def arrived(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async def probe() -> bool:
        return check()
    await until(probe, what, timeout)


def cli_json(gw: GatewayProcess, *args: str) -> Any:
    done = gw.cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def add_webhook(gw: GatewayProcess, receiver: Receiver, *events: str) -> str:
    args = ["webhooks", "add", receiver.url]
    for e in events:
        args += ["--event", e]
    doc = cli_json(gw, *args)
    receiver.secrets[doc["id"]] = doc["secret"].encode()
    return str(doc["id"])


def events(gw: GatewayProcess, *args: str) -> list[dict[str, Any]]:
    return list(cli_json(gw, "events", "list", *args)["items"])


async def new_key(gw: GatewayProcess, principal: str, *scopes: str) -> Key:
    """A key made straight in the store (the CLI's own commands are tested elsewhere)."""
    return Key.of(await gw.create_key(principal=principal, scopes=scopes))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
            ) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("events"), upstream, EVENTS)
    yield gw
    stop(gw.proc)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(free_port()).start()
    yield r
    await r.stop()


async def test_a_receiver_failing_three_times_gets_the_event_signed_with_the_same_id(
        gateway: GatewayProcess, receiver: Receiver) -> None:
    webhook_id = add_webhook(gateway, receiver, "key.created", "key.revoked")
    receiver.statuses = [500, 500, 500]
    key = await new_key(gateway, "svc-events")
    (created,) = events(gateway, "--key-id", key.key_id)
    await arrived(lambda: receiver.delivered(created["id"]), "the key.created delivery")
    got = receiver.received(created["id"])
    assert [d.answered for d in got] == [500, 500, 500, 200]
    assert receiver.refused == []  # every delivery verified: signature and Content-Digest
    assert len({d.raw for d in got}) == 1  # same body, same event ID, every time
    assert all(d.params["keyid"] == webhook_id and "created" in d.params for d in got)
    body = got[0].body
    assert body["id"] == created["id"] and body["type"] == "key.created"
    assert body["data"]["key"]["key_id"] == key.key_id
    assert "secret" not in got[0].raw.decode()  # the key record, never its secret
    (after,) = events(gateway, "--key-id", key.key_id, "--status", "delivered")
    (delivery,) = after["deliveries"]
    assert delivery["attempts"] == 4 and delivery["last_status"] == 200
    assert delivery["webhook_id"] == webhook_id


async def test_the_admin_api_lists_events_and_redelivers_one(
        gateway: GatewayProcess, receiver: Receiver) -> None:
    add_webhook(gateway, receiver, "key.revoked")
    operator = await new_key(gateway, "ops-events", "admin:keys:write", "admin:audit:read")
    key = await new_key(gateway, "svc-redeliver")
    status, doc = await admin(gateway, operator, "POST", f"/v1/keys/{key.key_id}/revoke",
                              {"reason": "offboarded"})
    assert status == 200
    target = f"/v1/events?target={key.key_id}&type=key.revoked"
    status, page = await admin(gateway, operator, "GET", target)
    assert status == 200 and page["next_cursor"] is None
    (revoked,) = page["items"]
    assert revoked["payload"]["key"]["status"] == "revoked"
    assert revoked["payload"]["reason"] == "offboarded"
    await arrived(lambda: receiver.delivered(revoked["id"]), "the key.revoked delivery")
    status, again = await admin(gateway, operator, "POST",
                                f"/v1/events/{revoked['id']}/redeliver")
    assert status == 200 and again["status"] == "pending"
    await arrived(lambda: len(receiver.received(revoked["id"])) == 2, "the redelivery")
    first, second = receiver.received(revoked["id"])
    assert first.raw == second.raw
    # refusals are the catalogue's JSON
    status, doc = await admin(gateway, operator, "POST", f"/v1/events/evt_{'0' * 32}/redeliver")
    assert (status, doc["error"]) == (404, "event_not_found")
    status, doc = await admin(gateway, operator, "POST", "/v1/events/nope/redeliver")
    assert (status, doc["error"]) == (400, "invalid_request")
    status, doc = await admin(gateway, operator, "GET", "/v1/events?status=lost")
    assert (status, doc["error"]) == (400, "invalid_request")
    reader = await new_key(gateway, "ops-reader", "admin:keys:read")
    status, doc = await admin(gateway, reader, "GET", "/v1/events")
    assert (status, doc["error"]) == (403, "scope_denied")
    audit = cli_json(gateway, "audit", "list", "--action", "event.redelivered")["items"]
    assert [a["target"] for a in audit] == [revoked["id"]]


async def test_an_event_committed_before_a_sigkill_is_delivered_after_the_restart(
        tmp_path: Path, upstream: Upstream) -> None:
    receiver = Receiver(free_port())  # not listening yet: every attempt fails
    gw = start_gateway(tmp_path, upstream, EVENTS)
    try:
        webhook_id = add_webhook(gw, receiver, "key.revoked")
        operator = await new_key(gw, "ops-kill", "admin:keys:write")
        key = await new_key(gw, "svc-kill")
        status, _ = await admin(gw, operator, "POST", f"/v1/keys/{key.key_id}/revoke")
        assert status == 200  # committed: the change and its event
    finally:
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
    (revoked,) = events(gw, "--type", "key.revoked")
    assert revoked["status"] == "pending" and receiver.deliveries == []
    await receiver.start()
    restarted = start_gateway(tmp_path, upstream, EVENTS, name="restarted")
    try:
        await arrived(lambda: receiver.delivered(revoked["id"]), "the delivery after restart",
                    timeout=10)
        assert receiver.refused == []
        assert receiver.received(revoked["id"])[0].body["data"]["key"]["key_id"] == key.key_id
        (done,) = events(restarted, "--type", "key.revoked", "--status", "delivered")
        assert done["id"] == revoked["id"]
        # the secret exists in plaintext only in memory: wrapped in the store, never logged
        secret = receiver.secrets[webhook_id]
        assert secret not in (tmp_path / "keys.db").read_bytes()
        assert secret not in gw.log.read_bytes() + restarted.log.read_bytes()
        listed = restarted.cli("webhooks", "list", "--json")
        assert listed.returncode == 0 and secret.decode() not in listed.stdout
    finally:
        stop(restarted.proc)
        await receiver.stop()
