"""Per-key source allowlists (issue 13, DESIGN §4.1 "Addresses"): over IPv4 and IPv6
(the data plane on ``127.0.0.1`` and on ``[::1]``), straight from the client and behind
a trusted proxy. A request from elsewhere is 403 ``source_denied`` — only once its
signature verified; a stranger still sees 401 ``signature_invalid``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .admin_client import Key, send, signed, until
from .gateway_fixtures import GatewayProcess, Upstream, start_gateway, stop

FLUSH = '[usage]\nflush = "100ms"\n'


def _start(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, name: str,
           host: str, trusted: str = "") -> Iterator[GatewayProcess]:
    server = f"trusted_proxies = [{trusted}]" if trusted else ""
    gw = start_gateway(tmp_path_factory.mktemp(name), upstream, FLUSH, server=server,
                       listen_host=host)
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def v4(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
       ) -> Iterator[GatewayProcess]:
    yield from _start(tmp_path_factory, upstream, "v4", "127.0.0.1")


@pytest.fixture(scope="module")
def v6(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
       ) -> Iterator[GatewayProcess]:
    yield from _start(tmp_path_factory, upstream, "v6", "::1")


@pytest.fixture(scope="module")
def v4_proxied(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
               ) -> Iterator[GatewayProcess]:
    yield from _start(tmp_path_factory, upstream, "v4p", "127.0.0.1",
                      '"127.0.0.1/32", "192.0.2.10/32"')


@pytest.fixture(scope="module")
def v6_proxied(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
               ) -> Iterator[GatewayProcess]:
    yield from _start(tmp_path_factory, upstream, "v6p", "::1", '"::1/128"')


async def call(gw: GatewayProcess, key: Key, forwarded_for: str | None = None
               ) -> tuple[int, Any]:
    extra = () if forwarded_for is None else (("X-Forwarded-For", forwarded_for),)
    status, doc, _ = await send(gw.url, "GET", "/api/src",
                                signed(gw.host, key, "GET", "/api/src", headers=extra))
    return status, doc if status != 200 else None


async def outcome(gw: GatewayProcess, cidrs: tuple[str, ...] | None,
                  forwarded_for: str | None = None) -> int | str:
    """200, or the error code, for a fresh key with these CIDRs."""
    key = Key.of(await gw.create_key(source_cidrs=cidrs))
    status, doc = await call(gw, key, forwarded_for)
    return 200 if status == 200 else f"{status} {doc['error']}"


DENIED = "403 source_denied"


async def test_ipv4_client_straight_to_the_gateway(v4: GatewayProcess) -> None:
    assert [await outcome(v4, c) for c in (
        None, ("127.0.0.0/8",), ("10.0.0.0/8", "127.0.0.1/32"), ("10.0.0.0/8",),
        ("::1/128",), ("::/0",), ())] == [200, 200, 200, DENIED, DENIED, DENIED, DENIED]
    # without trusted_proxies a client cannot talk its way in with X-Forwarded-For
    assert await outcome(v4, ("10.0.0.0/8",), "10.1.2.3") == DENIED


async def test_ipv6_client_straight_to_the_gateway(v6: GatewayProcess) -> None:
    assert v6.host.startswith("[::1]:")
    assert [await outcome(v6, c) for c in (
        None, ("::1/128",), ("::/0",), ("10.0.0.0/8", "::1/128"), ("127.0.0.0/8",),
        ("fd00::/8",), ("0.0.0.0/0",))] == [200, 200, 200, 200, DENIED, DENIED, DENIED]
    assert await outcome(v6, ("fd00::/8",), "fd00::1") == DENIED


async def test_the_signature_is_checked_before_the_source(v4: GatewayProcess,
                                                          v6: GatewayProcess) -> None:
    for gw in (v4, v6):
        key = Key.of(await gw.create_key(source_cidrs=("192.0.2.0/24",)))
        status, doc = await call(gw, Key(key.key_id, "gws_" + "A" * 49))
        assert (status, doc["error"]) == (401, "signature_invalid")  # strangers learn nothing
        status, doc = await call(gw, key)
        assert (status, doc["error"]) == (403, "source_denied")


@pytest.mark.parametrize("forwarded_for, cidrs, expected", [
    (None, ("127.0.0.1/32",), 200),  # no header: the proxy's own address
    (None, ("203.0.113.0/24",), DENIED),
    ("203.0.113.7", ("203.0.113.0/24",), 200),
    ("198.51.100.1", ("203.0.113.0/24",), DENIED),
    # the rightmost entry that is not itself a trusted proxy
    ("203.0.113.7, 192.0.2.10", ("203.0.113.0/24",), 200),
    ("203.0.113.7, 198.51.100.1", ("203.0.113.0/24",), DENIED),  # a forged left entry
    ("::ffff:203.0.113.7", ("203.0.113.0/24",), 200),  # IPv4-mapped matches IPv4
    ("2001:db8::5", ("2001:db8::/32",), 200),
    ("2001:db8::5", ("203.0.113.0/24",), DENIED),
    ("not-an-address", ("0.0.0.0/0", "::/0"), DENIED),
])
async def test_ipv4_behind_a_trusted_proxy(v4_proxied: GatewayProcess,
                                           forwarded_for: str | None,
                                           cidrs: tuple[str, ...], expected: int | str) -> None:
    assert await outcome(v4_proxied, cidrs, forwarded_for) == expected


@pytest.mark.parametrize("forwarded_for, cidrs, expected", [
    (None, ("::1/128",), 200),
    (None, ("2001:db8::/32",), DENIED),
    ("2001:db8::5", ("2001:db8::/32",), 200),
    ("2001:db8::5, ::1", ("2001:db8::/32",), 200),
    ("203.0.113.7", ("203.0.113.0/24",), 200),
    ("::ffff:203.0.113.7", ("203.0.113.0/24",), 200),
    ("fd00::9", ("2001:db8::/32",), DENIED),
])
async def test_ipv6_behind_a_trusted_proxy(v6_proxied: GatewayProcess,
                                           forwarded_for: str | None,
                                           cidrs: tuple[str, ...], expected: int | str) -> None:
    assert await outcome(v6_proxied, cidrs, forwarded_for) == expected


async def test_activity_counts_the_client_addresses(v4_proxied: GatewayProcess) -> None:
    key = Key.of(await v4_proxied.create_key(source_cidrs=("203.0.113.0/24",)))
    for forwarded_for, status in (("203.0.113.7", 200), ("203.0.113.7", 200),
                                  ("203.0.113.8", 200), ("198.51.100.1", 403)):
        assert (await call(v4_proxied, key, forwarded_for))[0] == status

    async def counted() -> Any:
        done = v4_proxied.cli("keys", "activity", key.key_id, "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        return doc if sum(s["count"] for s in doc["sources"]) == 4 else None
    doc = await until(counted, "the usage flush")
    assert doc == {"routes": [{"route": "/api/", "status": 200, "count": 3},
                              {"route": "/api/", "status": 403, "count": 1}],
                   "sources": [{"address": "198.51.100.1", "count": 1},
                               {"address": "203.0.113.7", "count": 2},
                               {"address": "203.0.113.8", "count": 1}]}


async def test_cli_sets_and_changes_the_networks(v4: GatewayProcess) -> None:
    done = v4.cli("keys", "create", "--principal", "svc-cidr", "--scope", "api:*",
                  "--allow-cidr", "10.0.0.0/8", "--allow-cidr", "127.0.0.1/32", "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert made["source_cidrs"] == ["10.0.0.0/8", "127.0.0.1/32"]
    key = Key.from_json(made)
    assert (await call(v4, key))[0] == 200

    async def answers(status: int) -> bool:
        return (await call(v4, key))[0] == status
    done = v4.cli("keys", "update", key.key_id, "--allow-cidr", "192.0.2.0/24", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["source_cidrs"] == ["192.0.2.0/24"]
    await until(lambda: answers(403), "the change poll")
    done = v4.cli("keys", "update", key.key_id, "--any-source", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["source_cidrs"] is None
    await until(lambda: answers(200), "the change poll")
    done = v4.cli("audit", "list", "--key-id", key.key_id, "--action", "key.updated", "--json")
    assert [e["details"] for e in json.loads(done.stdout)["items"]] == [
        {"source_cidrs": ["192.0.2.0/24"]}, {"source_cidrs": None}]
    for args, status, message in (
            (("--allow-cidr", "10.0.0.0/33"), 1, "source CIDR"),
            (("--allow-cidr", "10.0.0.0/8", "--any-source"), 2, "not allowed with"),
            (("--burst", "3"), 2, "--burst goes with --rate-limit")):
        done = v4.cli("keys", "update", key.key_id, *args)
        assert done.returncode == status and message in done.stderr, (args, done.stderr)
    done = v4.cli("keys", "update", "gwk_nope", "--name", "x")
    assert (done.returncode, done.stderr) == (2, "gateway: error: malformed key ID\n")


async def test_a_forged_line_before_the_proxys_own_line_does_not_win(
        v4_proxied: GatewayProcess) -> None:
    # HAProxy's `option forwardfor` adds its own X-Forwarded-For line after the client's:
    # every line counts, so the forged allowed address on the first line is ignored
    key = Key.of(await v4_proxied.create_key(source_cidrs=("10.0.0.0/8",)))
    headers = (("X-Forwarded-For", "10.1.2.3"), ("X-Forwarded-For", "203.0.113.9"))
    status, doc, _ = await send(v4_proxied.url, "GET", "/api/src",
                                signed(v4_proxied.host, key, "GET", "/api/src", headers=headers))
    assert (status, doc["error"]) == (403, "source_denied")
