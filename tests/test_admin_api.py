"""The admin API end to end: a real ``gateway serve`` process, every call signed the way
a script signs it (SigV4 + a signed ``x-gateway-nonce``), the bootstrap key made by the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.admin.openapi import render
from gateway.keys.formats import generate_key_id

from .admin_client import Key, admin, bootstrap_admin, data, send, signed, until
from .gateway_fixtures import GatewayProcess, Upstream, days_ago, start_gateway, stop

EXTRA = '[usage]\nflush = "100ms"\n'


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
            ) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("admin"), upstream, EXTRA)
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def root(gateway: GatewayProcess) -> Key:
    return bootstrap_admin(gateway, "ops-root")


async def new_key(gw: GatewayProcess, root: Key, **body: Any) -> dict[str, Any]:
    status, doc = await admin(gw, root, "POST", "/v1/keys", {"scopes": ["api:*"], **body})
    assert status == 201, doc
    return doc


# -- who may call ---------------------------------------------------------------------------

async def test_unsigned_and_badly_signed_calls_are_refused_and_audited(
        gateway: GatewayProcess, root: Key) -> None:
    status, doc, _ = await send(gateway.admin_url, "GET", "/v1/keys", [])
    assert (status, doc["error"]) == (401, "missing_auth")
    forged = Key(root.key_id, "gws_" + "A" * 49)
    status, doc = await admin(gateway, forged, "GET", "/v1/whoami")
    assert (status, doc["error"]) == (401, "signature_invalid")
    status, doc = await admin(gateway, root, "GET", "/v1/audit?action=admin.auth_failed")
    assert status == 200
    failed = doc["items"][-2:]
    assert [e["details"]["error"] for e in failed] == ["missing_auth", "signature_invalid"]
    assert all(e["outcome"] == "failure" and e["source"] == "127.0.0.1" for e in failed)
    # a forged signature names a key it cannot prove it holds: not attributed to it
    assert failed[1]["actor_key_id"] is None
    assert failed[1]["details"]["claimed_key_id"] == root.key_id
    assert failed[1]["target"] == "GET /v1/whoami"


async def test_a_replayed_admin_call_is_refused(gateway: GatewayProcess, root: Key) -> None:
    host = f"127.0.0.1:{gateway.admin_port}"
    headers = signed(host, root, "GET", "/v1/whoami")
    assert (await send(gateway.admin_url, "GET", "/v1/whoami", headers))[0] == 200
    status, doc, _ = await send(gateway.admin_url, "GET", "/v1/whoami", headers)
    assert (status, doc["error"]) == (401, "replayed")


async def test_non_admin_keys_and_missing_scopes_are_refused(gateway: GatewayProcess,
                                                             root: Key) -> None:
    plain = Key.of(await gateway.create_key(scopes=("api:*",)))
    reader = Key.of(await gateway.create_key(scopes=("admin:keys:read",)))
    auditor = Key.of(await gateway.create_key(scopes=("admin:audit:read",)))
    for key, method, target, body in (
            (plain, "GET", "/v1/keys", None), (plain, "GET", "/v1/whoami", None),
            (reader, "POST", "/v1/keys", {"principal": "x"}),
            (reader, "GET", "/v1/audit", None),
            (reader, "POST", f"/v1/keys/{plain.key_id}/revoke", {}),
            (auditor, "GET", f"/v1/keys/{plain.key_id}", None)):
        status, doc = await admin(gateway, key, method, target, body)
        assert (status, doc["error"]) == (403, "scope_denied"), (key, target)
    assert (await admin(gateway, reader, "GET", f"/v1/keys/{plain.key_id}"))[0] == 200
    assert (await admin(gateway, reader, "GET", "/v1/whoami"))[0] == 200
    assert (await admin(gateway, auditor, "GET", "/v1/audit?limit=1"))[0] == 200
    # the key was not revoked, and the refusal names the key that asked
    status, doc = await admin(gateway, root, "GET", f"/v1/keys/{plain.key_id}")
    assert doc["status"] == "active"
    status, doc = await admin(gateway, root, "GET", f"/v1/audit?actor={reader.key_id}")
    assert {e["details"]["required_scope"] for e in doc["items"]} == {
        "admin:keys:write", "admin:audit:read"}
    assert {e["actor_principal"] for e in doc["items"]} == {
        (await admin(gateway, root, "GET", f"/v1/keys/{reader.key_id}"))[1]["principal"]}


async def test_only_admin_may_issue_admin_scopes(gateway: GatewayProcess, root: Key) -> None:
    writer = Key.of(await gateway.create_key(principal="ops-writer",
                                             scopes=("admin:keys:write", "admin:keys:read")))
    for scopes in (["admin"], ["admin:audit:read"], ["ad*"], ["admin:*"], ["leaks:report"]):
        status, doc = await admin(gateway, writer, "POST", "/v1/keys",
                                  {"principal": "svc-escalate", "scopes": scopes})
        assert (status, doc["error"]) == (403, "scope_denied"), scopes
    status, made = await admin(gateway, writer, "POST", "/v1/keys",
                               {"principal": "svc-escalate", "scopes": ["api:*"]})
    assert status == 201
    status, doc = await admin(gateway, writer, "PATCH", f"/v1/keys/{made['key_id']}",
                              {"scopes": ["api:*", "admin"]})
    assert (status, doc["error"]) == (403, "scope_denied")
    status, doc = await admin(gateway, writer, "POST", f"/v1/keys/{root.key_id}/rotate", {})
    assert (status, doc["error"]) == (403, "scope_denied")  # a new root secret for it: no
    status, doc = await admin(gateway, root, "GET", f"/v1/keys/{root.key_id}")
    assert doc["status"] == "active"
    status, doc = await admin(gateway, root, "GET",
                              f"/v1/audit?actor={writer.key_id}&action=key.rotated")
    assert [(e["outcome"], e["details"]) for e in doc["items"]] == [
        ("failure", {"error": "scope_denied"})]


async def test_expired_and_revoked_admin_keys_are_refused(gateway: GatewayProcess,
                                                          root: Key) -> None:
    expired = Key.of(await gateway.create_key(scopes=("admin",), now=days_ago(2),
                                              expiry=86400.0))
    status, doc = await admin(gateway, expired, "GET", "/v1/whoami")
    assert (status, doc["error"]) == (401, "key_expired")
    other = Key.from_json(await new_key(gateway, root, principal="ops-2", scopes=["admin"]))
    assert (await admin(gateway, other, "GET", "/v1/whoami"))[0] == 200
    assert (await admin(gateway, root, "POST", f"/v1/keys/{other.key_id}/revoke",
                        {"reason": "offboarded"}))[0] == 200
    status, doc = await admin(gateway, other, "GET", "/v1/whoami")
    assert (status, doc["error"]) == (401, "key_revoked")  # at once on this instance
    status, doc = await admin(gateway, root, "GET", f"/v1/audit?key_id={other.key_id}")
    last = doc["items"][-1]
    assert (last["action"], last["actor_key_id"], last["actor_principal"]) == (
        "admin.auth_failed", other.key_id, "ops-2")  # verified, so attributed


# -- the key calls --------------------------------------------------------------------------

async def test_create_returns_the_secret_once_and_the_key_works(gateway: GatewayProcess,
                                                               root: Key) -> None:
    doc = await new_key(gateway, root, principal="svc-create", name="deploy",
                        expires_in="30d", rate_limit={"rps": 5, "burst": 10},
                        source_cidrs=["127.0.0.0/8"])
    assert list(doc)[:2] == ["key_id", "secret"]
    assert (doc["principal"], doc["name"], doc["scopes"], doc["status"]) == (
        "svc-create", "deploy", ["api:*"], "active")
    assert doc["rate_limit"] == {"rps": 5, "burst": 10}
    assert doc["source_cidrs"] == ["127.0.0.0/8"]
    assert doc["created_by"] == "ops-root" and doc["issued_with_mfa"] is False
    key = Key.from_json(doc)
    status, seen = await data(gateway, key, "GET", "/api/created")
    assert status == 200 and ["X-Gateway-Principal", "svc-create"] in seen["headers"]
    status, again = await admin(gateway, root, "GET", f"/v1/keys/{key.key_id}")
    assert status == 200 and "secret" not in again
    status, audit = await admin(gateway, root, "GET", "/v1/audit?limit=1000")
    assert key.secret not in json.dumps(audit)


async def test_create_refusals(gateway: GatewayProcess, root: Key) -> None:
    for body, code in (
            ({"name": "no principal"}, "invalid_request"),
            ({"principal": "p", "scopes": "api:*"}, "invalid_request"),
            ({"principal": "p", "colour": "red"}, "invalid_request"),
            ({"principal": "p", "expires_in": "soon"}, "invalid_request"),
            ({"principal": "p", "expires_at": "tomorrow"}, "invalid_request"),
            ({"principal": "p", "expires_in": "30d", "expires_at": "2030-01-01T00:00:00Z"},
             "invalid_request"),
            ({"principal": "p", "expires_in": "400d"}, "policy_violation"),
            ({"principal": "p", "no_expiry": True}, "policy_violation"),
            ({"principal": "p", "source_cidrs": ["10.0.0.0/33"]}, "policy_violation")):
        status, doc = await admin(gateway, root, "POST", "/v1/keys", body)
        assert doc["error"] == code, body
        assert status == {"invalid_request": 400, "policy_violation": 422}[code]
    for raw in (b"{", b"[1]", b'"x"', b"\xff\xfe", b'{"principal": 1e999}'):
        status, doc = await admin(gateway, root, "POST", "/v1/keys", raw=raw)
        assert (status, doc["error"]) == (400, "invalid_request"), raw
    await new_key(gateway, root, principal="svc-limit")
    await new_key(gateway, root, principal="svc-limit")
    status, doc = await admin(gateway, root, "POST", "/v1/keys", {"principal": "svc-limit"})
    assert (status, doc["error"]) == (409, "key_limit_reached")
    status, doc = await admin(gateway, root, "GET", "/v1/audit?action=key.created&limit=1000")
    assert doc["items"][-1]["outcome"] == "failure"
    assert doc["items"][-1]["details"] == {"error": "key_limit_reached"}


async def test_list_filters_and_pages(gateway: GatewayProcess, root: Key) -> None:
    made = [await new_key(gateway, root, principal="svc-list", name=f"k{i}") for i in range(2)]
    status, doc = await admin(gateway, root, "GET", "/v1/keys?principal=svc-list")
    assert [k["key_id"] for k in doc["items"]] == [m["key_id"] for m in made]
    assert doc["next_cursor"] is None and all("secret" not in k for k in doc["items"])
    status, first = await admin(gateway, root, "GET", "/v1/keys?principal=svc-list&limit=1")
    assert len(first["items"]) == 1 and first["next_cursor"]
    status, second = await admin(gateway, root, "GET", "/v1/keys?principal=svc-list&limit=1"
                                 f"&cursor={first['next_cursor']}")
    assert [k["key_id"] for k in first["items"] + second["items"]] == [m["key_id"] for m in made]
    await admin(gateway, root, "POST", f"/v1/keys/{made[0]['key_id']}/revoke", {})
    status, doc = await admin(gateway, root, "GET", "/v1/keys?principal=svc-list&status=revoked")
    assert [k["key_id"] for k in doc["items"]] == [made[0]["key_id"]]
    created = made[1]["created_at"]
    status, doc = await admin(gateway, root, "GET",
                              f"/v1/keys?principal=svc-list&created_before={created}")
    assert [k["key_id"] for k in doc["items"]] == [made[0]["key_id"]]
    status, doc = await admin(gateway, root, "GET",
                              "/v1/keys?principal=svc-list&unused_since=2000-01-01T00:00:00Z")
    assert doc["items"] == []
    for query in ("limit=0", "limit=1001", "status=sleepy", "cursor=nonsense",
                  "created_after=yesterday", "colour=red", "limit=1&limit=2"):
        status, doc = await admin(gateway, root, "GET", f"/v1/keys?{query}")
        assert (status, doc["error"]) == (400, "invalid_request"), query


async def test_get_update_renew_and_not_found(gateway: GatewayProcess, root: Key) -> None:
    made = await new_key(gateway, root, principal="svc-edit", name="before", expires_in="1d")
    key_id = made["key_id"]
    status, got = await admin(gateway, root, "PATCH", f"/v1/keys/{key_id}",
                              {"name": "after", "scopes": ["api:read"], "rate_limit": None,
                               "source_cidrs": ["10.0.0.0/8"]})
    assert status == 200
    assert (got["name"], got["scopes"], got["source_cidrs"]) == (
        "after", ["api:read"], ["10.0.0.0/8"])
    status, doc = await data(gateway, Key.from_json(made), "GET", "/api/x")
    assert (status, doc["error"]) == (403, "source_denied")  # the change is in force at once
    status, got = await admin(gateway, root, "POST", f"/v1/keys/{key_id}/renew",
                              {"expires_in": "10d"})
    assert status == 200 and got["expires_at"] > made["expires_at"]
    status, got = await admin(gateway, root, "POST", f"/v1/keys/{key_id}/renew",
                              {"expires_in": "500d"})
    assert (status, got["error"]) == (422, "policy_violation")
    unknown = generate_key_id()
    for method, suffix, body in (("GET", "", None), ("PATCH", "", {"name": "x"}),
                                 ("POST", "/rotate", {}), ("POST", "/renew", {}),
                                 ("POST", "/revoke", {}), ("GET", "/activity", None)):
        status, got = await admin(gateway, root, method, f"/v1/keys/{unknown}{suffix}", body)
        assert (status, got["error"]) == (404, "key_not_found"), suffix
        status, got = await admin(gateway, root, method, f"/v1/keys/gwk_nope{suffix}", body)
        assert (status, got["error"]) == (400, "invalid_request"), suffix


async def test_rotate_keeps_the_old_key_for_the_grace_then_revoke(gateway: GatewayProcess,
                                                                 root: Key) -> None:
    old = await new_key(gateway, root, principal="svc-rotate", name="ci")
    status, new = await admin(gateway, root, "POST", f"/v1/keys/{old['key_id']}/rotate",
                              {"grace": "1h"})
    assert status == 201 and new["secret"].startswith("gws_")
    assert (new["principal"], new["name"], new["rotated_from"]) == (
        "svc-rotate", "ci", old["key_id"])
    status, got = await admin(gateway, root, "GET", f"/v1/keys/{old['key_id']}")
    assert (got["status"], got["rotated_to"], got["revoke_reason"]) == (
        "rotating", new["key_id"], "rotated")
    assert (await data(gateway, Key.from_json(old), "GET", "/api/old"))[0] == 200
    assert (await data(gateway, Key.from_json(new), "GET", "/api/new"))[0] == 200
    status, got = await admin(gateway, root, "POST", f"/v1/keys/{old['key_id']}/rotate", {})
    assert (status, got["error"]) == (422, "policy_violation")  # only active keys rotate
    status, got = await admin(gateway, root, "POST", f"/v1/keys/{new['key_id']}/rotate",
                              {"grace": "400d"})
    assert (status, got["error"]) == (422, "policy_violation")
    status, got = await admin(gateway, root, "POST", f"/v1/keys/{old['key_id']}/revoke",
                              {"reason": "leaked"})
    assert (status, got["status"], got["revoke_reason"]) == (200, "revoked", "leaked")
    status, doc = await data(gateway, Key.from_json(old), "GET", "/api/old")
    assert (status, doc["error"]) == (401, "key_revoked")
    status, got = await admin(gateway, root, "POST", f"/v1/keys/{old['key_id']}/revoke", {})
    assert (status, got["error"]) == (422, "policy_violation")


async def test_activity_and_requests_last_hour(gateway: GatewayProcess, root: Key) -> None:
    key = Key.from_json(await new_key(gateway, root, principal="svc-activity",
                                      scopes=["api:read"]))
    for _ in range(3):
        assert (await data(gateway, key, "GET", "/api/a"))[0] == 200
    assert (await data(gateway, key, "POST", "/api/a", b"{}"))[0] == 403  # scope
    assert (await data(gateway, key, "GET", "/open/b"))[0] == 200

    async def counted() -> Any:
        _, doc = await admin(gateway, root, "GET", f"/v1/keys/{key.key_id}")
        return doc if doc["requests_last_hour"] == 5 else None
    doc = await until(counted, "the usage flush")
    assert doc["last_used_at"] is not None
    status, act = await admin(gateway, root, "GET", f"/v1/keys/{key.key_id}/activity?since=1h")
    assert status == 200
    assert act == {"routes": [{"route": "/api/", "status": 200, "count": 3},
                              {"route": "/api/", "status": 403, "count": 1},
                              {"route": "/open/", "status": 200, "count": 1}],
                   "sources": [{"address": "127.0.0.1", "count": 5}]}
    done = gateway.cli("keys", "activity", key.key_id, "--since", "1h", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == act, done.stderr
    for query in ("since=forever", "since=9999999d", "until=1h"):
        status, doc = await admin(gateway, root, "GET",
                                  f"/v1/keys/{key.key_id}/activity?{query}")
        assert (status, doc["error"]) == (400, "invalid_request"), query


async def test_admin_calls_count_in_the_admin_keys_activity(gateway: GatewayProcess,
                                                              root: Key) -> None:
    reader = Key.of(await gateway.create_key(scopes=("admin:keys:read",)))
    for _ in range(2):
        assert (await admin(gateway, reader, "GET", "/v1/whoami"))[0] == 200
    assert (await admin(gateway, reader, "GET", "/v1/audit"))[0] == 403

    async def counted() -> Any:
        _, act = await admin(gateway, root, "GET", f"/v1/keys/{reader.key_id}/activity")
        return act if len(act["routes"]) == 2 else None
    act = await until(counted, "the usage flush")
    assert act["routes"] == [{"route": "admin", "status": 200, "count": 2},
                             {"route": "admin", "status": 403, "count": 1}]


async def test_aiohttp_parse_errors_on_the_admin_listener_are_json(
        gateway: GatewayProcess, root: Key) -> None:
    status, doc = await admin(gateway, root, "GET", "/v1/audit?actor=" + "x" * 9000)
    assert (status, doc["error"]) == (431, "headers_too_large")


async def test_admin_bodies_are_bounded(gateway: GatewayProcess, root: Key) -> None:
    big = json.dumps({"principal": "p", "name": "x" * 70_000}).encode()
    status, doc = await admin(gateway, root, "POST", "/v1/keys", raw=big)
    assert (status, doc["error"]) == (413, "body_too_large")


async def test_audit_filters_and_cursor(gateway: GatewayProcess, root: Key) -> None:
    doc = await new_key(gateway, root, principal="svc-audit")
    key_id = doc["key_id"]
    await admin(gateway, root, "PATCH", f"/v1/keys/{key_id}", {"name": "renamed"})
    await admin(gateway, root, "POST", f"/v1/keys/{key_id}/revoke", {"reason": "offboarded"})
    status, got = await admin(gateway, root, "GET", f"/v1/audit?key_id={key_id}")
    assert [(e["action"], e["outcome"]) for e in got["items"]] == [
        ("key.created", "success"), ("key.updated", "success"), ("key.revoked", "success")]
    revoked = got["items"][2]
    assert (revoked["actor_key_id"], revoked["actor_principal"], revoked["source"],
            revoked["details"]) == (root.key_id, "ops-root", "127.0.0.1",
                                    {"reason": "offboarded"})
    status, first = await admin(gateway, root, "GET", f"/v1/audit?key_id={key_id}&limit=2")
    status, rest = await admin(gateway, root, "GET",
                               f"/v1/audit?key_id={key_id}&cursor={first['next_cursor']}")
    assert first["items"] + rest["items"] == got["items"] and rest["next_cursor"] is None
    at = revoked["at"]
    status, window = await admin(gateway, root, "GET",
                                 f"/v1/audit?key_id={key_id}&since={at}&until=2100-01-01T00:00:00Z")
    assert [e["action"] for e in window["items"]] == ["key.revoked"]
    status, doc = await admin(gateway, root, "GET", "/v1/audit?actor=ops-root&action=key.updated")
    assert key_id in [e["target"] for e in doc["items"]]
    for query in ("cursor=x", "since=now", "limit=-1"):
        status, doc = await admin(gateway, root, "GET", f"/v1/audit?{query}")
        assert (status, doc["error"]) == (400, "invalid_request"), query


async def test_cli_audit_list(gateway: GatewayProcess, root: Key) -> None:
    doc = await new_key(gateway, root, principal="svc-cli-audit")
    done = gateway.cli("audit", "list", "--key-id", doc["key_id"], "--json")
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)["items"]
    assert [(e["action"], e["actor_principal"]) for e in items] == [("key.created", "ops-root")]
    done = gateway.cli("audit", "list", "--key-id", doc["key_id"])
    assert done.returncode == 0 and "key.created" in done.stdout and "ops-root" in done.stdout


async def test_whoami_and_unsigned_endpoints(gateway: GatewayProcess, root: Key) -> None:
    status, me = await admin(gateway, root, "GET", "/v1/whoami")
    assert (status, me["key_id"], me["principal"], me["scopes"]) == (
        200, root.key_id, "ops-root", ["admin"])
    for path in ("/healthz", "/readyz"):
        status, doc, _ = await send(gateway.admin_url, "GET", path, [])
        assert (status, doc) == (200, {"status": "ok"})
    status, doc, _ = await send(gateway.admin_url, "GET", "/v1/openapi.json", [])
    assert status == 200 and doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": "/"}]
    status, doc = await admin(gateway, root, "GET", "/v1/nowhere")
    assert (status, doc["error"]) == (404, "route_not_found")
    status, doc = await admin(gateway, root, "DELETE", "/v1/keys")
    assert (status, doc["error"]) == (404, "route_not_found")


def test_the_committed_openapi_document_is_current() -> None:
    from .conftest import ROOT
    assert (ROOT / "gateway/admin/openapi.json").read_bytes() == render(), (
        "regenerate gateway/admin/openapi.json (see gateway/admin/openapi.py)")


def test_every_admin_route_is_documented_with_its_errors() -> None:
    from gateway.admin import openapi
    doc = openapi.document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "default" in op["responses"], (method, path)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    from gateway.admin import calls, keys, leaks
    served = {(r.method, r.path) for r in [*keys.routes(), *calls.routes(), *leaks.routes()]}
    assert served <= documented


async def test_metrics_move_with_traffic(gateway: GatewayProcess, root: Key) -> None:
    async def scrape() -> dict[str, float]:
        status, raw, _ = await send(gateway.admin_url, "GET", "/metrics", [])
        assert status == 200
        values: dict[str, float] = {}
        for line in raw.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    before = await scrape()
    key = Key.from_json(await new_key(gateway, root, principal="svc-metrics"))
    for _ in range(4):
        assert (await data(gateway, key, "GET", "/api/m"))[0] == 200
    assert (await data(gateway, Key(key.key_id, "gws_" + "B" * 49), "GET", "/api/m"))[0] == 401
    after = await scrape()

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)
    assert moved('gateway_requests_total{outcome="ok",route="/api/",status="200"}') >= 4
    assert moved('gateway_requests_total{outcome="signature_invalid",route="/api/",'
                 'status="401"}') >= 1
    assert moved('gateway_requests_total{outcome="ok",route="admin",status="201"}') >= 1
    assert moved("gateway_request_duration_seconds_count") >= 5
    assert moved('gateway_request_duration_seconds_bucket{le="+Inf"}') >= 5
    assert moved("gateway_cache_hits_total") + moved("gateway_cache_misses_total") >= 5
    assert 'gateway_store_errors_total{component="cache"}' in after
    # keys by status come from the store (cached for a few seconds), not from traffic
    assert after['gateway_keys{status="active"}'] >= 1
