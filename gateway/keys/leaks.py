"""A leaked secret, found by ``gateway scan --revoke`` or reported to ``POST /v1/leaks``,
is mapped to its key and revoked at once (DESIGN §4.1 "Finding a key from a bare
secret", "Leak reports").

The lookup is one indexed read of ``sha256(secret)``; the key is confirmed by
unwrapping its secret and comparing in constant time, so a hash collision or a
tampered row can never revoke (or be reported as) someone else's key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime
from typing import Literal

from gateway.kek import KekError, Keyring, UnwrapError
from gateway.keys.errors import PolicyViolation
from gateway.keys.formats import is_well_formed_secret
from gateway.keys.lifecycle import LEAKED, Actor, KeyManager
from gateway.keys.record import KeyRecord
from gateway.store import Store

__all__ = ["LEAKED", "Verdict", "find_key_by_secret", "revoke_leaked"]

log = logging.getLogger("gateway.keys")

Verdict = Literal["revoked", "already_revoked", "not_ours"]


async def find_key_by_secret(store: Store, keyring: Keyring, secret: str) -> KeyRecord | None:
    """The key whose secret is exactly ``secret``; None for anything else (malformed,
    bad checksum, unknown), without saying which."""
    if not is_well_formed_secret(secret):
        return None
    token = secret.encode("ascii")
    record = await store.get_key_by_secret_sha256(hashlib.sha256(token).digest())
    if record is None:
        return None
    try:
        real = keyring.unwrap_secret(record.key_id, record.wrapped)
    except UnwrapError as exc:  # a record this keyring cannot open is not confirmed
        log.warning("leak lookup: cannot unwrap %s: %s", record.key_id, exc)
        return None
    return record if hmac.compare_digest(real.hmac_key(), token) else None


async def revoke_leaked(manager: KeyManager, secret: str, *, source: str, actor: Actor,
                        now: datetime) -> tuple[Verdict, KeyRecord | None]:
    """Revoke the key of a leaked secret with reason ``leaked``, recording ``source``
    (``path:line`` or a URL) in the audit trail. Expired and inactive keys are revoked
    too: their secret is out, whatever the clock says."""
    keyring = manager.keyring
    if keyring is None:
        raise KekError("confirming a leaked secret needs the keyring (config setting kek.keyring)")
    record = await find_key_by_secret(manager.store, keyring, secret)
    if record is None:
        return "not_ours", None
    if record.status(now, manager.policy.inactivity) == "revoked":
        return "already_revoked", record
    try:
        revoked = await manager.revoke(record.key_id, actor=actor, now=now, reason=LEAKED,
                                       source=source)
    except PolicyViolation:  # revoked meanwhile, by someone else
        return "already_revoked", record
    return "revoked", revoked
