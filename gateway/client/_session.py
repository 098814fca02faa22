"""The signing flow every adapter shares, and two-key mode.

Like httpx's ``Auth.auth_flow()``, ``SigningSession.attempts()`` is one plain
generator with no I/O: it yields the headers of an attempt and is sent back
``None`` when the answer was not an auth failure, or the failure's code. The
adapters (requests, httpx sync and async, aiohttp) only move bytes::

    flow = session.attempts(method, url, headers, body)
    headers_to_set = next(flow)
    while True:
        code = auth_failure(status, body_of_401)        # after sending
        headers_to_set = flow.send(code)                 # StopIteration: done

Two-key mode (credentials with a ``previous`` key): sign with the current key;
on 401 ``signature_invalid``, ``key_revoked``, ``key_expired`` or
``key_inactive`` retry once with the other key, and remember the one that
worked. A fallback to the previous key is remembered for
``retry_current_after`` seconds, then the current key is tried first again —
so an old key does not stay "in use" (and un-revocable by ``--wait-idle``)
once the gateway accepts the new one. Credentials loaded from a file are
reloaded when the file changes (mtime, size or inode).

Expiry warnings: a response carrying ``Gateway-Key-Expires`` (the key is inside the
gateway's ``[auth] expiry_warning`` window) is logged once per process per key, on
the ``gateway.client`` logger; adapters call ``notice_expiry()`` with the headers
they sent and the header's value.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable
from typing import Literal

from ._credentials import Credentials
from ._errors import CredentialsError
from ._signers import ADDED_HEADERS, RFC9421Signer, SigV4Signer

__all__ = ["EXPIRES_HEADER", "RETRY_CODES", "Scheme", "SigningSession", "auth_failure",
           "headers_to_sign", "signing_key_id"]

log = logging.getLogger("gateway.client")

Scheme = Literal["sigv4", "rfc9421"]
Attempts = Generator[list[tuple[str, str]], str | None, None]
# the 401 codes that may mean "the gateway does not (or no longer) accept this key" (§5)
RETRY_CODES = frozenset({"signature_invalid", "key_revoked", "key_expired", "key_inactive"})
EXPIRES_HEADER = "Gateway-Key-Expires"
# SigV4 "Credential=<key ID>/<scope>", RFC 9421 'keyid="<key ID>"'
_SIGV4_KEY = re.compile(r"Credential=([^/,\s]+)/")
_RFC9421_KEY = re.compile(r'keyid="([^"\\]+)"')
_warned: set[str] = set()  # key IDs already warned about, once per process
_warned_lock = threading.Lock()
# a case-insensitive header lookup: ``request.headers.get`` of any adapted library
HeaderGet = Callable[[str], str | None]


def signing_key_id(sent: HeaderGet) -> str | None:
    """The key ID a request was signed with, read from the headers the signer added."""
    authorization = sent("Authorization")
    match = _SIGV4_KEY.search(authorization) if authorization else None
    if match is None:
        signature_input = sent("Signature-Input")
        match = _RFC9421_KEY.search(signature_input) if signature_input else None
    return match.group(1) if match else None


def auth_failure(status: int, body: bytes) -> str | None:
    """The code of a 401 answer whose retry with the other key may help, else ``None``."""
    if status != 401:
        return None
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):  # not JSON, or not an object: not the gateway's
        return None
    return code if code in RETRY_CODES else None


def headers_to_sign(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``Host``, ``Content-Type`` and every ``X-Amz-*`` header (the gateway refuses an
    unsigned one). Headers a client library or proxy may rewrite are left out."""
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in ("host", "content-type") or (
                lower.startswith("x-amz-") and lower not in ADDED_HEADERS):
            out.append((name, value))
    return out


class SigningSession:
    """One adapter's signer, keys and memory of which key works."""

    def __init__(self, credentials: Credentials, *, scheme: Scheme = "sigv4",
                 region: str = "local", service: str = "gateway",
                 unsigned_payload: bool = False, retry_current_after: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(credentials, Credentials):
            raise TypeError("credentials must be a gateway.client.Credentials")
        self.signer: SigV4Signer | RFC9421Signer
        if scheme == "sigv4":
            self.signer = SigV4Signer(region=region, service=service,
                                      unsigned_payload=unsigned_payload)
        elif scheme == "rfc9421":
            if unsigned_payload:
                raise ValueError("unsigned_payload is a SigV4 feature; RFC 9421 always "
                                 "signs a Content-Digest")
            self.signer = RFC9421Signer()
        else:
            raise ValueError(f"scheme must be 'sigv4' or 'rfc9421', not {scheme!r}")
        self.retry_current_after = retry_current_after
        self._clock = clock
        self._lock = threading.Lock()
        self._credentials = credentials
        self._keys = credentials.keys()
        self._file_state = self._stat(credentials)
        self._preferred = credentials.key_id
        self._fallback_at = 0.0
        self._failures: dict[str, int] = {}

    @property
    def credentials(self) -> Credentials:
        """The credentials in use, reloaded first if their file changed."""
        self._refresh()
        return self._credentials

    @property
    def key_id(self) -> str:
        """The key ID the next request is signed with first."""
        return self._order(self._refresh())[0].key_id

    @property
    def failures(self) -> dict[str, int]:
        """Auth failures (401 with one of ``RETRY_CODES``) per key ID."""
        with self._lock:
            return dict(self._failures)

    def notice_expiry(self, sent: HeaderGet, expires: str | None) -> None:
        """Log a warning, once per process per key, when a response carries
        ``Gateway-Key-Expires`` (``expires``: its value, or None when absent; ``sent``:
        the lookup of the request's headers, which name the key that signed it)."""
        if expires is None:
            return
        key_id = signing_key_id(sent) or self._credentials.key_id
        with _warned_lock:
            if key_id in _warned:
                return
            _warned.add(key_id)
        log.warning("gateway key %s expires at %s (or goes inactive then): rotate it, "
                    "e.g. with gateway.client.rotate_if_expiring()", key_id, expires[:64])

    def attempts(self, method: str, url: str, headers: Iterable[tuple[str, str]],
                 body: bytes | None) -> Attempts:
        """The headers of each attempt: one, or two in two-key mode. ``body=None``
        is a stream: it is sent once, never retried."""
        keys = self._refresh()
        current = keys[0].key_id
        signed = headers_to_sign(headers)
        for index, key in enumerate(self._order(keys)):
            code = yield self.signer.sign(key, method, url, signed, body)
            if code is None:
                self._worked(key.key_id, current, retried=index > 0)
                return
            self._failed(key.key_id)
            if body is None:
                return

    # -- state ----------------------------------------------------------------------

    def _order(self, keys: tuple[Credentials, ...]) -> tuple[Credentials, ...]:
        if len(keys) == 2 and self._preferred == keys[1].key_id and (
                self._clock() - self._fallback_at < self.retry_current_after):
            return keys[1], keys[0]
        return keys

    def _worked(self, key_id: str, current: str, *, retried: bool) -> None:
        with self._lock:
            if key_id == current:
                self._preferred = key_id
            elif retried:  # the current key failed and the previous one did not
                self._preferred = key_id
                self._fallback_at = self._clock()

    def _failed(self, key_id: str) -> None:
        with self._lock:
            self._failures[key_id] = self._failures.get(key_id, 0) + 1

    @staticmethod
    def _stat(credentials: Credentials) -> tuple[int, int, int] | None:
        if credentials.path is None:
            return None
        try:
            st = os.stat(credentials.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _refresh(self) -> tuple[Credentials, ...]:
        """The keys, current first, after reloading their file if it changed."""
        credentials = self._credentials
        if credentials.path is None:
            return self._keys
        state = self._stat(credentials)
        if state is None or state == self._file_state:  # unchanged, or being replaced
            return self._keys
        try:
            fresh = Credentials.from_file(credentials.path)
        except CredentialsError as exc:
            log.warning("keeping the credentials loaded before: %s", exc)
            fresh = credentials
        with self._lock:
            self._file_state = state
            self._credentials = fresh
            self._keys = fresh.keys()
            if self._preferred not in fresh.key_ids:
                self._preferred = fresh.key_id
            return self._keys


class SessionAdapter:
    """What every adapter shares: one :class:`SigningSession`, the key tried first and
    the failure counts per key (the two-key mode's evidence)."""

    def __init__(self, credentials: Credentials, *, scheme: Scheme = "sigv4",
                 region: str = "local", service: str = "gateway",
                 unsigned_payload: bool = False, retry_current_after: float = 60.0) -> None:
        self.session = SigningSession(credentials, scheme=scheme, region=region,
                                      service=service, unsigned_payload=unsigned_payload,
                                      retry_current_after=retry_current_after)

    @property
    def key_id(self) -> str:
        return self.session.key_id

    @property
    def failures(self) -> dict[str, int]:
        return self.session.failures
