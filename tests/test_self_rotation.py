"""Keys that expire without breaking automation (issue 11, points 1 and 2): the
``Gateway-Key-Expires`` warning, ``POST /_gateway/self/rotate`` and the SDK's
``rotate_if_expiring()``, against a real ``gateway serve`` process.

The clock is controlled by creating keys with a ``now`` in the past (no sleeping for
days): a key made a day ago with a 15-day lifetime is 14 days from its expiry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import pytest
import requests

from gateway.client import Credentials, RequestsAuth, RotationError, _session, rotate_if_expiring
from gateway.client._session import SigningSession
from gateway.config import load_config
from gateway.kek import load_keyring
from gateway.keys.lifecycle import Actor, Issued, KeyManager, NewKey
from gateway.keys.record import RateLimit, rfc3339
from gateway.store import open_store

from .admin_client import Key, admin, bootstrap_admin, send, signed, until
from .gateway_fixtures import GatewayProcess, Upstream, days_ago, start_gateway, stop

DAY = 86400.0
HOUR = 3600.0
ROTATE = "/_gateway/self/rotate"
WHOAMI = "/_gateway/whoami"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
            ) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("expiry"), upstream)  # default policy
    yield gw
    stop(gw.proc)


@pytest.fixture(autouse=True)
def fresh_warnings() -> None:
    _session._warned.clear()  # "once per process": each test starts as a new process would


async def make_key(gw: GatewayProcess, *, age_days: float = 0.0, lifetime: float = 60 * DAY,
                   scopes: tuple[str, ...] = ("api:*", "self:rotate"), mfa: bool = False,
                   allow_self_rotate: bool = True, **kw: Any) -> Issued:
    """A key created ``age_days`` ago, expiring ``lifetime`` after its creation; ``mfa``
    as if issued with a one-time code. ``allow_self_rotate=True`` lets a test make a
    key with ``self:rotate`` even where the gateway's policy no longer grants it."""
    config = load_config(gw.config_path, env={})
    store = await open_store(config.store.url)
    policy = replace(config.policy, allow_self_rotate=allow_self_rotate)
    try:
        manager = KeyManager(store, load_keyring(config.kek.keyring), policy)
        return await manager.create(
            NewKey(principal=f"ci-{os.urandom(4).hex()}", name="nightly", scopes=scopes,
                   expiry=lifetime, **kw),
            actor=Actor(principal="cli:test", mfa=mfa), now=days_ago(age_days))
    finally:
        await store.close()


async def call(gw: GatewayProcess, key: Key, method: str, target: str, body: bytes = b""
               ) -> tuple[int, Any, dict[str, str]]:
    return await send(gw.url, method, target, signed(gw.host, key, method, target, body), body)


def save(path: Path, issued: Issued) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(issued.to_api(datetime.now(UTC), 30 * DAY), handle)


# -- the warning ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def session_forwarder(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
                      ) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("expiry-aiohttp"), upstream,
                       server='forwarder = "aiohttp"')
    yield gw
    stop(gw.proc)


@pytest.mark.parametrize("forwarder", ["lean", "aiohttp"])
async def test_the_header_appears_exactly_inside_the_warning_window(
        request: pytest.FixtureRequest, forwarder: str) -> None:
    gateway = request.getfixturevalue("gateway" if forwarder == "lean" else "session_forwarder")
    # expiry 14 d + 1 h from now (outside), 14 d - 1 h (inside); made a day ago
    outside = Key.of(await make_key(gateway, age_days=1, lifetime=15 * DAY + HOUR))
    inside_issued = await make_key(gateway, age_days=1, lifetime=15 * DAY - HOUR)
    inside = Key.of(inside_issued)
    status, _, headers = await call(gateway, outside, "GET", "/api/expiry/out")
    assert status == 200 and "Gateway-Key-Expires" not in headers
    status, _, headers = await call(gateway, inside, "GET", "/api/expiry/in")
    assert status == 200
    assert headers["Gateway-Key-Expires"] == rfc3339(inside_issued.record.expires_at)
    # on every response to a request whose signature verified, whatever its status
    status, doc, headers = await call(gateway, inside, "GET", "/nowhere")
    assert status == 404 and "Gateway-Key-Expires" not in headers  # refused before any key
    status, doc, headers = await call(gateway, inside, "DELETE", "/api/expiry/in")
    assert status == 403 and doc["error"] == "scope_denied"
    assert "Gateway-Key-Expires" in headers
    status, doc, headers = await call(gateway, inside, "GET", WHOAMI)
    assert status == 200 and "Gateway-Key-Expires" in headers
    assert doc["expires_at"] == rfc3339(inside_issued.record.expires_at)
    assert doc["may_self_rotate"] is True and doc["inactive_after"]
    # a bad signature proves nothing: no header
    forged = Key(inside.key_id, "gws_" + "x" * 49)
    status, doc, headers = await call(gateway, forged, "GET", "/api/expiry/in")
    assert status == 401 and "Gateway-Key-Expires" not in headers


async def test_the_inactivity_deadline_counts_when_it_comes_first(
        gateway: GatewayProcess) -> None:
    # [policy] inactivity = 30d in the fixtures: made 20 days ago, never used → 10 days left
    issued = await make_key(gateway, age_days=20, lifetime=80 * DAY)
    status, doc, headers = await call(gateway, Key.of(issued), "GET", WHOAMI)
    assert status == 200
    assert doc["inactive_after"] == rfc3339(issued.record.created_at + timedelta(days=30))
    assert headers["Gateway-Key-Expires"] == doc["inactive_after"]


def test_the_sdk_warns_once_per_key(caplog: pytest.LogCaptureFixture) -> None:
    session = SigningSession(Credentials("gwk_" + "a" * 28, "gws_" + "s" * 49))
    other = SigningSession(Credentials("gwk_" + "b" * 28, "gws_" + "s" * 49),
                           scheme="rfc9421")
    caplog.set_level(logging.WARNING, logger="gateway.client")
    for s, url in ((session, "http://gw/api/a"), (other, "http://gw/api/b")):
        for _ in range(3):
            sent = dict(next(s.attempts("GET", url, [], b"")))
            s.notice_expiry(sent.get, "2026-12-14T00:00:00Z")
            s.notice_expiry(sent.get, None)
    warned = [r.getMessage() for r in caplog.records if r.name == "gateway.client"]
    assert len(warned) == 2
    assert "gwk_" + "a" * 28 in warned[0] and "gwk_" + "b" * 28 in warned[1]
    assert "2026-12-14T00:00:00Z" in warned[0]


# -- a client through its key's warning window -----------------------------------------------

class Traffic:
    """Signed GETs through the SDK (requests), without pause, from a thread."""

    def __init__(self, gw: GatewayProcess, auth: RequestsAuth) -> None:
        self.gw, self.auth = gw, auth
        self.results: list[tuple[int, str | None, bool]] = []  # status, key ID, warned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as http:
            n = 0
            while not self._stop.is_set():
                r = http.get(f"{self.gw.url}/api/ci/{n}", auth=self.auth, timeout=10)
                key = r.json().get("headers", {})
                self.results.append((r.status_code, self._key_of(key),
                                     "Gateway-Key-Expires" in r.headers))
                n += 1

    @staticmethod
    def _key_of(seen: Any) -> str | None:
        pairs = seen if isinstance(seen, list) else list(dict(seen).items())
        return next((v for k, v in pairs if k.lower() == "x-gateway-key-id"), None)

    def wait_for(self, n: int) -> None:
        target = len(self.results) + n
        deadline = time.monotonic() + 10
        while len(self.results) < target:
            assert time.monotonic() < deadline, "the client made no progress"
            time.sleep(0.01)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def test_a_client_rotates_itself_through_its_warning_window(
        gateway: GatewayProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.client")
    # made a day ago with an 11-day lifetime: 10 days left, inside the 14-day window
    old = asyncio.run(make_key(gateway, age_days=1, lifetime=11 * DAY))
    path = tmp_path / "ci.json"
    save(path, old)
    # a window of 7 days: nothing to do yet
    assert rotate_if_expiring(path, gateway.url, within="7d") is False
    assert json.loads(path.read_text())["key_id"] == old.record.key_id

    auth = RequestsAuth(Credentials.from_file(path))
    with Traffic(gateway, auth) as traffic:
        traffic.wait_for(20)
        assert all(warned for _, _, warned in traffic.results)  # the header, each time
        assert rotate_if_expiring(path, gateway.url, grace="2s") is True
        rotated_at = len(traffic.results)
        doc = json.loads(path.read_text())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert doc["previous"] == {"key_id": old.record.key_id,
                                   "secret": old.secret.reveal()}
        new = Key.from_json(doc)
        assert new.key_id != old.record.key_id and doc["rotated_from"] == old.record.key_id
        # the old key works through its grace period, then is refused
        refused = asyncio.run(until(lambda: _refused(gateway, Key.of(old)),
                                    "the old key's grace period to end", timeout=10))
        assert refused == "key_revoked"
        traffic.wait_for(20)
    assert [s for s, _, _ in traffic.results if s != 200] == []  # never a failed call
    assert auth.failures == {}
    keys_used = [k for _, k, _ in traffic.results[rotated_at:]]
    assert keys_used[-1] == new.key_id  # the client moved to the new key by itself
    assert not traffic.results[-1][2]  # 90 days left (30 before inactivity): no header
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.client"]
    assert len(warnings) == 1 and old.record.key_id in warnings[0]
    # nothing left to do: the new key is far from its deadline
    assert rotate_if_expiring(path, gateway.url) is False
    assert sorted(tmp_path.iterdir()) == [path]  # no temporary file left behind


async def _refused(gw: GatewayProcess, key: Key) -> str | None:
    status, doc, _ = await call(gw, key, "GET", "/api/ci/old")
    return doc["error"] if status == 401 else None


def test_rotate_if_expiring_with_rfc9421_and_the_environment(
        gateway: GatewayProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = asyncio.run(make_key(gateway, age_days=1, lifetime=3 * DAY))
    path = tmp_path / "svc.json"
    save(path, old)
    monkeypatch.setenv("GATEWAY_CREDENTIALS_FILE", str(path))
    assert rotate_if_expiring(None, gateway.url + "/", scheme="rfc9421") is True
    doc = json.loads(path.read_text())
    assert doc["previous"]["key_id"] == old.record.key_id and doc["secret"].startswith("gws_")
    # the default grace (24 h): the old key is rotating, so it cannot rotate again
    path.write_text(json.dumps({"key_id": old.record.key_id, "secret": old.secret.reveal()}))
    with pytest.raises(RotationError) as refused:
        rotate_if_expiring(path, gateway.url, within="30d")
    assert refused.value.status == 422 and refused.value.code == "policy_violation"


def test_rotate_if_expiring_reports_a_key_without_the_scope(
        gateway: GatewayProcess, tmp_path: Path) -> None:
    plain = asyncio.run(make_key(gateway, age_days=1, lifetime=2 * DAY, scopes=("api:*",)))
    path = tmp_path / "plain.json"
    save(path, plain)
    before = path.read_bytes()
    with pytest.raises(RotationError) as refused:
        rotate_if_expiring(path, gateway.url)
    assert refused.value.status == 403 and refused.value.code == "scope_denied"
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


# -- self-rotation: refusals and inheritance ------------------------------------------------

async def test_self_rotate_refusals(gateway: GatewayProcess) -> None:
    plain = Key.of(await make_key(gateway, scopes=("api:*",)))
    status, doc, _ = await call(gateway, plain, "POST", ROTATE)
    assert (status, doc["error"]) == (403, "scope_denied")
    key = Key.of(await make_key(gateway))
    for body in (b"not json", b"[]", b'{"grace": 5}', b'{"grace": "soon"}',
                 b'{"scopes": ["admin"]}', b'{"grace": "1h", "issued_with_mfa": true}'):
        status, doc, _ = await call(gateway, key, "POST", ROTATE, body)
        assert (status, doc["error"]) == (400, "invalid_request"), body
    for body in (b'{"grace": "31d"}',  # over max_rotation_grace (30 d)
                 b'{"expires_in": "91d"}',  # longer than default_lifetime (90 d)
                 b'{"expires_in": "0s"}'):  # shorter than min_lifetime (1 s)
        status, doc, _ = await call(gateway, key, "POST", ROTATE, body)
        assert (status, doc["error"]) == (422, "policy_violation"), body
    status, doc, _ = await call(gateway, key, "GET", ROTATE)
    assert (status, doc["error"]) == (400, "invalid_request")
    status, doc, _ = await call(gateway, key, "POST", "/_gateway/self/other")
    assert (status, doc["error"]) == (404, "route_not_found")
    # the key is untouched by all of that
    status, doc, _ = await call(gateway, key, "GET", WHOAMI)
    assert doc["status"] == "active" and doc["rotated_to"] is None


async def test_self_rotate_passes_every_data_plane_check_first(
        gateway: GatewayProcess) -> None:
    key = Key.of(await make_key(gateway))
    headers = signed(gateway.host, key, "POST", ROTATE)
    status, first, _ = await send(gateway.url, "POST", ROTATE, headers)
    assert status == 201, first
    status, doc, _ = await send(gateway.url, "POST", ROTATE, headers)  # the same request
    assert (status, doc["error"]) == (401, "replayed")
    elsewhere = Key.of(await make_key(gateway, source_cidrs=("10.0.0.0/8",)))
    status, doc, _ = await call(gateway, elsewhere, "POST", ROTATE)
    assert (status, doc["error"]) == (403, "source_denied")
    expired = Key.of(await make_key(gateway, age_days=2, lifetime=DAY))
    status, doc, _ = await call(gateway, expired, "POST", ROTATE)
    assert (status, doc["error"]) == (401, "key_expired")
    forged = Key(key.key_id, "gws_" + "x" * 49)
    status, doc, _ = await call(gateway, forged, "POST", ROTATE)
    assert (status, doc["error"]) == (401, "signature_invalid")


@pytest.mark.parametrize("mfa", [False, True], ids=["without-mfa", "with-mfa"])
async def test_the_new_key_never_has_more_than_its_parent(gateway: GatewayProcess,
                                                          mfa: bool) -> None:
    parent = await make_key(gateway, scopes=("api:read", "self:rotate"), mfa=mfa,
                            rate_limit=RateLimit(rps=5, burst=10),
                            source_cidrs=("127.0.0.0/8", "::1/128"))
    before = time.time()
    status, child, _ = await call(gateway, Key.of(parent), "POST", ROTATE,
                                  b'{"grace": "1h", "expires_in": "10d"}')
    assert status == 201, child
    assert child["secret"].startswith("gws_") and child["key_id"] != parent.record.key_id
    for field in ("principal", "name", "scopes", "issued_with_mfa", "rate_limit",
                  "source_cidrs"):
        assert child[field] == parent.to_api(datetime.now(UTC), 0)[field], field
    assert child["issued_with_mfa"] is mfa
    assert child["created_by"] == parent.record.principal
    assert child["rotated_from"] == parent.record.key_id and child["status"] == "active"
    expires = datetime.fromisoformat(child["expires_at"]).timestamp()
    assert before + 10 * DAY - 5 <= expires <= time.time() + 10 * DAY
    # the parent is rotating until its grace ends, and says so
    status, doc, _ = await call(gateway, Key.of(parent), "GET", WHOAMI)
    assert doc["status"] == "rotating" and doc["rotated_to"] == child["key_id"]
    grace_end = datetime.fromisoformat(doc["revoked_at"]).timestamp()
    assert before + HOUR - 5 <= grace_end <= time.time() + HOUR
    # the child works on the data plane with exactly its parent's rights
    status, _, _ = await call(gateway, Key.from_json(child), "GET", "/api/child")
    assert status == 200
    status, doc, _ = await call(gateway, Key.from_json(child), "POST", "/api/child")
    assert (status, doc["error"]) == (403, "scope_denied")
    # with no body: the policy's default lifetime (90 d) and grace (24 h)
    status, grand, _ = await call(gateway, Key.from_json(child), "POST", ROTATE)
    assert status == 201, grand
    expires = datetime.fromisoformat(grand["expires_at"]).timestamp()
    assert before + 90 * DAY - 5 <= expires <= time.time() + 90 * DAY
    assert grand["issued_with_mfa"] is mfa and grand["scopes"] == ["api:read", "self:rotate"]


async def test_self_rotation_is_audited(gateway: GatewayProcess) -> None:
    root = bootstrap_admin(gateway, f"ops-{os.urandom(3).hex()}")
    key = Key.of(await make_key(gateway))
    assert (await call(gateway, key, "POST", ROTATE, b'{"grace": "99d"}'))[0] == 422
    assert (await call(gateway, key, "POST", ROTATE))[0] == 201
    status, page = await admin(gateway, root, "GET", f"/v1/audit?key_id={key.key_id}")
    assert status == 200, page
    rows = [(r["action"], r["outcome"], r["actor_key_id"], r["target"]) for r in page["items"]
            if r["target"] == key.key_id]
    assert ("key.rotated", "failure", key.key_id, key.key_id) in rows
    assert ("key.rotated", "success", key.key_id, key.key_id) in rows


# -- policy: who may hold self:rotate ---------------------------------------------------------

@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
           ) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("strict"), upstream,
                       policy="allow_self_rotate = false")
    yield gw
    stop(gw.proc)


async def test_policy_decides_whether_self_rotate_may_be_granted(
        strict: GatewayProcess) -> None:
    done = strict.cli("keys", "create", "--principal", "ci", "--scope", "self:rotate",
                      "--json")
    assert done.returncode != 0 and "allow_self_rotate" in done.stderr, done
    root = bootstrap_admin(strict, "ops-root")
    status, doc = await admin(strict, root, "POST", "/v1/keys",
                              {"principal": "ci", "scopes": ["api:*", "self:rotate"]})
    assert (status, doc["error"]) == (422, "policy_violation")
    status, made = await admin(strict, root, "POST", "/v1/keys",
                               {"principal": "ci", "scopes": ["api:*"]})
    assert status == 201
    status, doc = await admin(strict, root, "PATCH", f"/v1/keys/{made['key_id']}",
                              {"scopes": ["api:*", "self:rotate"]})
    assert (status, doc["error"]) == (422, "policy_violation")
    # a key granted self:rotate before the policy changed may not use it
    earlier = Key.of(await make_key(strict, allow_self_rotate=True))
    status, doc, _ = await call(strict, earlier, "GET", WHOAMI)
    assert status == 200 and doc["may_self_rotate"] is False
    status, doc, _ = await call(strict, earlier, "POST", ROTATE)
    assert (status, doc["error"]) == (422, "policy_violation")


@pytest.fixture(scope="module")
def mfa_policy(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
               ) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("mfa"), upstream,
                       policy="require_mfa_for_issuance = true")
    yield gw
    stop(gw.proc)


async def test_mfa_required_policies_still_apply(mfa_policy: GatewayProcess) -> None:
    without = Key.of(await make_key(mfa_policy, mfa=False))
    status, doc, _ = await call(mfa_policy, without, "POST", ROTATE)
    assert (status, doc["error"]) == (403, "mfa_required")
    status, child, _ = await call(mfa_policy, Key.of(await make_key(mfa_policy, mfa=True)),
                                  "POST", ROTATE)
    assert status == 201 and child["issued_with_mfa"] is True


# -- the README's recipes, as written -----------------------------------------------------------

CURL = shutil.which("curl")


def test_the_readme_curl_line_rotates_a_key(gateway: GatewayProcess, tmp_path: Path) -> None:
    assert CURL is not None, "curl is not installed: run 'apt-get install -y curl'"
    key = Key.of(asyncio.run(make_key(gateway)))
    out = tmp_path / "new-key.json"
    with out.open("wb") as sink:
        subprocess.run([CURL, "-sf", "--aws-sigv4", "aws:amz:local:gateway", "--user",
                        f"{key.key_id}:{key.secret}", "-X", "POST",
                        f"{gateway.url}/_gateway/self/rotate"], stdout=sink, check=True,
                       timeout=30)
    new = Key.from_json(json.loads(out.read_text()))
    status, doc, _ = asyncio.run(call(gateway, new, "GET", WHOAMI))
    assert status == 200 and doc["rotated_from"] == key.key_id
    # with a body: the grace asked for
    status, doc, _ = asyncio.run(call(gateway, key, "GET", WHOAMI))
    assert doc["status"] == "rotating"
    done = subprocess.run([CURL, "-s", "--aws-sigv4", "aws:amz:local:gateway", "--user",
                           f"{new.key_id}:{new.secret}", "-H", "Content-Type: application/json",
                           "-d", '{"grace": "1h"}', f"{gateway.url}/_gateway/self/rotate"],
                          capture_output=True, check=True, timeout=30, text=True)
    assert json.loads(done.stdout)["rotated_from"] == new.key_id


@pytest.mark.parametrize("adapter", ["httpx", "httpx-async", "aiohttp"])
def test_every_adapter_warns_once(gateway: GatewayProcess, adapter: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    import aiohttp
    import httpx

    from gateway.client import HttpxAuth, aiohttp_middleware

    caplog.set_level(logging.WARNING, logger="gateway.client")
    issued = asyncio.run(make_key(gateway, age_days=1, lifetime=5 * DAY))
    creds = Credentials(issued.record.key_id, issued.secret.reveal())
    urls = [f"{gateway.url}/api/warn/{n}" for n in range(3)]

    async def run_async() -> list[int]:
        if adapter == "aiohttp":
            async with aiohttp.ClientSession(middlewares=(aiohttp_middleware(creds),)) as s:
                statuses = []
                for url in urls:
                    async with s.get(url) as r:
                        statuses.append(r.status)
                return statuses
        async with httpx.AsyncClient(auth=HttpxAuth(creds)) as client:
            return [(await client.get(url)).status_code for url in urls]

    if adapter == "httpx":
        with httpx.Client(auth=HttpxAuth(creds)) as client:
            statuses = [client.get(url).status_code for url in urls]
    else:
        statuses = asyncio.run(run_async())
    assert statuses == [200, 200, 200]
    warned = [r.getMessage() for r in caplog.records if r.name == "gateway.client"]
    assert len(warned) == 1 and issued.record.key_id in warned[0]
