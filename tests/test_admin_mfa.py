"""MFA step-up (RFC 6238 TOTP) on a gateway whose policy requires it for issuance and
refuses keys issued without it on the data plane."""

from __future__ import annotations

import base64
import sqlite3
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.admin.mfa import totp
from gateway.config import load_config

from .admin_client import Key, admin, bootstrap_admin, data
from .gateway_fixtures import GatewayProcess, Upstream, start_gateway, stop

POLICY = "require_mfa_for_issuance = true\nreject_keys_without_mfa = true"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
            ) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("mfa"), upstream, policy=POLICY)
    yield gw
    stop(gw.proc)


def seed_of(uri: str) -> bytes:
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def code(seed: bytes, step: int) -> str:
    return totp(seed).generate(step * 30).decode()


def mfa(value: str) -> tuple[tuple[str, str], ...]:
    return (("Gateway-MFA-Code", value),)


async def enrol(gw: GatewayProcess, key: Key) -> bytes:
    status, doc = await admin(gw, key, "POST", "/v1/mfa/enroll")
    assert status == 201, doc
    assert doc["otpauth_uri"].startswith("otpauth://totp/")
    return seed_of(doc["otpauth_uri"])


async def test_issuance_needs_a_fresh_code_and_records_it(gateway: GatewayProcess) -> None:
    root = bootstrap_admin(gateway, "ops-mfa")
    # the CLI-made bootstrap key was issued without MFA, yet the admin listener takes it
    status, me = await admin(gateway, root, "GET", "/v1/whoami")
    assert status == 200 and me["issued_with_mfa"] is False
    body = {"principal": "svc-mfa", "scopes": ["api:*"]}
    status, doc = await admin(gateway, root, "POST", "/v1/keys", body)
    assert (status, doc["error"]) == (403, "mfa_required")
    status, doc = await admin(gateway, root, "POST", "/v1/keys", body, headers=mfa("123456"))
    assert (status, doc["error"]) == (403, "mfa_required")  # not enrolled yet

    seed = await enrol(gateway, root)
    assert len(seed) * 8 >= 160
    status, doc = await admin(gateway, root, "POST", "/v1/mfa/enroll")
    assert (status, doc["error"]) == (422, "policy_violation")  # once per principal

    step = int(time.time()) // 30
    valid = {code(seed, s) for s in (step - 1, step, step + 1)}
    wrong = next(c for c in (code(seed, step + n) for n in range(10, 20)) if c not in valid)
    for bad in (wrong, "12345", "abcdef", ""):
        status, doc = await admin(gateway, root, "POST", "/v1/keys", body, headers=mfa(bad))
        assert (status, doc["error"]) == (403, "mfa_required"), bad

    now_code = code(seed, step)
    status, made = await admin(gateway, root, "POST", "/v1/keys", body, headers=mfa(now_code))
    assert status == 201, made
    assert made["issued_with_mfa"] is True
    status, doc = await admin(gateway, root, "POST", f"/v1/keys/{made['key_id']}/rotate", {},
                              headers=mfa(now_code))
    assert (status, doc["error"]) == (403, "mfa_required")  # a code works once
    status, rotated = await admin(gateway, root, "POST", f"/v1/keys/{made['key_id']}/rotate",
                                  {"grace": "1h"}, headers=mfa(code(seed, step + 1)))
    assert status == 201 and rotated["issued_with_mfa"] is True
    status, doc = await admin(gateway, root, "POST", f"/v1/keys/{made['key_id']}/renew", {},
                              headers=mfa(code(seed, step - 1)))
    assert (status, doc["error"]) == (403, "mfa_required")  # older than one already used

    # the data plane refuses keys issued without MFA, and takes those issued with it
    assert (await data(gateway, Key.from_json(rotated), "GET", "/api/mfa"))[0] == 200
    cli_key = Key.of(await gateway.create_key(scopes=("api:*",)))
    status, doc = await data(gateway, cli_key, "GET", "/api/mfa")
    assert (status, doc["error"]) == (403, "mfa_required")

    status, audit = await admin(gateway, root, "GET", "/v1/audit?actor=ops-mfa&limit=1000")
    trail = [(e["action"], e["outcome"], e["details"].get("error")) for e in audit["items"]]
    assert ("mfa.enrolled", "success", None) in trail
    assert ("mfa.enrolled", "failure", "policy_violation") in trail
    assert trail.count(("key.created", "failure", "mfa_required")) == 6
    assert ("key.rotated", "failure", "mfa_required") in trail
    assert ("key.renewed", "failure", "mfa_required") in trail


async def test_renew_needs_a_code_of_the_callers_own_principal(gateway: GatewayProcess) -> None:
    alice, bob = bootstrap_admin(gateway, "ops-alice"), bootstrap_admin(gateway, "ops-bob")
    alice_seed = await enrol(gateway, alice)
    await enrol(gateway, bob)
    target = Key.of(await gateway.create_key(scopes=("api:*",)))
    step = int(time.time()) // 30
    status, doc = await admin(gateway, bob, "POST", f"/v1/keys/{target.key_id}/renew",
                              {"expires_in": "7d"}, headers=mfa(code(alice_seed, step)))
    assert (status, doc["error"]) == (403, "mfa_required")  # alice's code is not bob's
    status, doc = await admin(gateway, alice, "POST", f"/v1/keys/{target.key_id}/renew",
                              {"expires_in": "7d"}, headers=mfa(code(alice_seed, step)))
    assert status == 200, doc
    # revoking is not issuance: no code needed
    status, doc = await admin(gateway, alice, "POST", f"/v1/keys/{target.key_id}/revoke", {})
    assert status == 200, doc


def test_seeds_are_stored_only_wrapped(gateway: GatewayProcess) -> None:
    # the CLI, which holds the KEK, is not subject to require_mfa_for_issuance
    done = gateway.cli("keys", "create", "--principal", "svc-cli", "--json")
    assert done.returncode == 0, done.stderr
    db = load_config(gateway.config_path, env={}).store.url.removeprefix("sqlite://")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT principal, kek_version, length(ciphertext) "
                            "FROM mfa_enrolments ORDER BY principal").fetchall()
        audit = " ".join(r[0] for r in conn.execute("SELECT details FROM audit"))
    assert [r[0] for r in rows] == ["ops-alice", "ops-bob", "ops-mfa"]
    assert all(r[1] == 1 and r[2] == 20 + 16 for r in rows)  # seed + GCM tag, nothing else
    assert "otpauth" not in audit and "secret" not in audit
