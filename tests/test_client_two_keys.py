"""Two-key mode: zero failed calls through a server-side rotation, with each adapter,
and the rules of the shared flow (retry once, remember, try current again later)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Self

import aiohttp
import httpx
import pytest
import requests

from gateway.client import Credentials, HttpxAuth, RequestsAuth, aiohttp_middleware
from gateway.client._session import SigningSession, auth_failure

from .client_server import VerifyingServer, new_key, running

ADAPTERS = ["requests", "httpx", "httpx-async", "aiohttp"]


def write_credentials(path: Path, key: tuple[str, str],
                      previous: tuple[str, str] | None = None) -> None:
    """As an operator saves the answer of key creation or rotation: atomically, 0600."""
    doc: dict[str, Any] = {"key_id": key[0], "secret": key[1], "principal": "ci",
                           "scopes": ["read"]}
    if previous:
        doc["previous"] = {"key_id": previous[0], "secret": previous[1]}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle)
    os.replace(tmp, path)


class ClientLoop:
    """Calls the server without pause from a thread of its own until stopped,
    recording every status; ``wait_for(n)`` blocks until n more calls are done."""

    def __init__(self, adapter: str, auth: Any, url: str) -> None:
        self.adapter, self.auth, self.url = adapter, auth, url
        self.statuses: list[int] = []
        self.key_ids: list[str] = []
        self._done = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _record(self, status: int, body: Any) -> None:
        with self._done:
            self.statuses.append(status)
            self.key_ids.append(body.get("key_id", body.get("error")))
            self._done.notify_all()

    def _run(self) -> None:
        if self.adapter == "requests":
            with requests.Session() as s:
                s.auth = self.auth
                while not self._stop.is_set():
                    r = s.get(self.url)
                    self._record(r.status_code, r.json())
        elif self.adapter == "httpx":
            with httpx.Client(auth=self.auth) as client:
                while not self._stop.is_set():
                    r = client.get(self.url)
                    self._record(r.status_code, r.json())
        else:
            asyncio.run(self._run_async())

    async def _run_async(self) -> None:
        if self.adapter == "httpx-async":
            async with httpx.AsyncClient(auth=self.auth) as client:
                while not self._stop.is_set():
                    r = await client.get(self.url)
                    self._record(r.status_code, r.json())
            return
        async with aiohttp.ClientSession(middlewares=(self.auth,)) as session:
            while not self._stop.is_set():
                async with session.get(self.url) as resp:
                    self._record(resp.status, await resp.json())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    def wait_for(self, calls: int) -> None:
        with self._done:
            target = len(self.statuses) + calls
            assert self._done.wait_for(lambda: len(self.statuses) >= target
                                       or not self._thread.is_alive(), timeout=20)
            assert self._thread.is_alive(), "the client loop died"


def make_auth(adapter: str, credentials: Credentials, scheme: Any) -> Any:
    if adapter == "requests":
        return RequestsAuth(credentials, scheme=scheme)
    if adapter.startswith("httpx"):
        return HttpxAuth(credentials, scheme=scheme)
    return aiohttp_middleware(credentials, scheme=scheme)


@pytest.mark.parametrize("scheme", ["sigv4", "rfc9421"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_rotation_under_load_fails_no_call(adapter: str, scheme: str, tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    creds_file = tmp_path / "gateway-key.json"
    write_credentials(creds_file, old)
    with running(VerifyingServer()) as server:
        server.accept(dict([old]))
        auth = make_auth(adapter, Credentials.from_file(creds_file), scheme)
        with ClientLoop(adapter, auth, server.url + "/api/poll?item=1&item=2") as loop:
            loop.wait_for(5)
            # 1. the rotation's answer is saved before every gateway instance knows the
            #    new key: the client tries it, falls back to the previous one, remembers
            write_credentials(creds_file, new, previous=old)
            loop.wait_for(5)
            assert auth.key_id == old[0]
            # 2. the gateway accepts both (grace period), 3. then revokes the old key
            server.accept(dict([old, new]))
            loop.wait_for(5)
            server.revoke(old[0])
            loop.wait_for(10)
        assert set(loop.statuses) == {200}, f"failed calls: {loop.statuses}"
        assert auth.key_id == new[0]
        assert loop.key_ids[-5:] == [new[0]] * 5
        # one failure each: the new key once before the gateway knew it, the old one
        # once after its revocation; after each, the working key was remembered
        assert auth.failures == {new[0]: 1, old[0]: 1}
        assert server.rejected == {"signature_invalid": 1, "key_revoked": 1}


# -- the shared flow, without HTTP ----------------------------------------------------

CURRENT, PREVIOUS = new_key(), new_key()
TWO_KEYS = Credentials(*CURRENT, previous=Credentials(*PREVIOUS))


def signed_by(headers: list[tuple[str, str]]) -> str:
    text = dict(headers)["Authorization"]
    match = re.search(r"Credential=([^/]+)/", text)
    assert match
    return match.group(1)


def run_flow(session: SigningSession, answers: list[str | None]) -> list[str]:
    """Drive one request's attempts, answering each with the next code."""
    flow = session.attempts("GET", "http://gw.test/x", [("Host", "gw.test")], b"")
    used = [signed_by(next(flow))]
    for code in answers:
        try:
            used.append(signed_by(flow.send(code)))
        except StopIteration:
            break
    return used


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_once_then_remember_then_try_current_again() -> None:
    clock = Clock()
    session = SigningSession(TWO_KEYS, retry_current_after=60, clock=clock)
    assert run_flow(session, [None]) == [CURRENT[0]]
    assert run_flow(session, ["signature_invalid", None]) == [CURRENT[0], PREVIOUS[0]]
    assert run_flow(session, [None]) == [PREVIOUS[0]]  # remembered
    clock.now += 59
    assert run_flow(session, [None]) == [PREVIOUS[0]]
    clock.now += 1  # the current key gets another chance, and works now
    assert run_flow(session, [None]) == [CURRENT[0]]
    assert run_flow(session, [None]) == [CURRENT[0]]
    assert session.failures == {CURRENT[0]: 1}


def test_both_keys_failing_is_one_retry_not_a_loop() -> None:
    session = SigningSession(TWO_KEYS)
    assert run_flow(session, ["key_revoked", "key_revoked", None]) == [CURRENT[0], PREVIOUS[0]]
    assert session.failures == {CURRENT[0]: 1, PREVIOUS[0]: 1}
    assert session.key_id == CURRENT[0]


def test_one_key_means_no_retry() -> None:
    session = SigningSession(Credentials(*CURRENT))
    assert run_flow(session, ["signature_invalid", None]) == [CURRENT[0]]
    assert session.failures == {CURRENT[0]: 1}


def test_a_stream_is_never_sent_twice() -> None:
    session = SigningSession(TWO_KEYS, unsigned_payload=True)
    flow = session.attempts("POST", "http://gw.test/x", [], None)
    assert signed_by(next(flow)) == CURRENT[0]
    with pytest.raises(StopIteration):
        flow.send("signature_invalid")


@pytest.mark.parametrize(("status", "body", "code"), [
    (401, b'{"error": "signature_invalid", "message": "x"}', "signature_invalid"),
    (401, b'{"error": "key_revoked", "message": "x"}', "key_revoked"),
    (401, b'{"error": "key_expired", "message": "x"}', "key_expired"),
    (401, b'{"error": "key_inactive", "message": "x"}', "key_inactive"),
    # another key cannot help with these, or the answer is not the gateway's
    (401, b'{"error": "replayed", "message": "x"}', None),
    (401, b'{"error": "request_expired", "message": "x"}', None),
    (401, b'{"error": "missing_auth", "message": "x"}', None),
    (401, b"<html>Unauthorized</html>", None),
    (401, b'["signature_invalid"]', None),
    (403, b'{"error": "scope_denied", "message": "x"}', None),
    (200, b'{"error": "signature_invalid"}', None),
])
def test_which_answers_are_auth_failures(status: int, body: bytes, code: str | None) -> None:
    assert auth_failure(status, body) == code


def test_a_credentials_file_change_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    write_credentials(path, CURRENT)
    session = SigningSession(Credentials.from_file(path))
    assert run_flow(session, [None]) == [CURRENT[0]]
    other = new_key()
    write_credentials(path, other, previous=CURRENT)
    assert run_flow(session, [None]) == [other[0]]
    assert session.credentials.previous == Credentials(*CURRENT)


def test_a_broken_rewrite_keeps_the_loaded_keys(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "creds.json"
    write_credentials(path, CURRENT)
    session = SigningSession(Credentials.from_file(path))
    path.write_text('{"key_id": "half-writ')
    assert run_flow(session, [None]) == [CURRENT[0]]
    assert "keeping the credentials loaded before" in caplog.text
    assert CURRENT[1] not in caplog.text
    write_credentials(path, PREVIOUS)
    assert run_flow(session, [None]) == [PREVIOUS[0]]

