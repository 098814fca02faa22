"""TOTP step-up for issuance (RFC 6238; DESIGN §1 "Weak issuance", §4.1).

A principal enrols once; its seed (160 bits, RFC 4226 §4's recommended length) is
kept wrapped under the KEK with a purpose of its own, like key secrets (DESIGN §3.3),
and re-wrapped with them when the KEK rotates.
A code is accepted for the current 30-second step or the one either side (clock
drift, RFC 6238 §5.2), and each step at most once: the store records the highest
step used, atomically, so a code seen on the wire cannot be replayed on any instance.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from ..errors import GatewayError
from ..kek import KekError, Keyring
from ..keys.record import AuditEntry
from ..store import MfaEnrolment, Store

__all__ = ["MFA_HEADER", "enrol", "totp", "verify_code"]

MFA_HEADER = "Gateway-MFA-Code"
SEED_BYTES = 20
STEP = 30
DIGITS = 6
ISSUER = "gateway"
_CODE = re.compile(r"[0-9]{6}", re.ASCII)


def totp(seed: bytes) -> TOTP:
    return TOTP(seed, DIGITS, SHA1(), STEP)


async def enrol(store: Store, keyring: Keyring, principal: str, now: datetime,
                audit: AuditEntry) -> str | None:
    """Enrol ``principal`` (with its audit row, in one transaction); the ``otpauth://``
    URI, or None when it is already enrolled."""
    seed = secrets.token_bytes(SEED_BYTES)
    enrolment = MfaEnrolment(principal, keyring.wrap_totp_seed(principal, seed), now)
    async with store.transaction() as tx:
        if not await tx.insert_mfa(enrolment):
            return None
        await tx.add_audit([audit])
    return totp(seed).get_provisioning_uri(principal, ISSUER)


async def verify_code(store: Store, keyring: Keyring, principal: str, code: str,
                      now: float) -> None:
    """Accept ``code`` once, or raise 403 ``mfa_required`` (missing enrolment, wrong or
    reused code: one answer for all, so the answer is no oracle)."""
    refused = GatewayError("mfa_required", f"a valid, unused one-time code is needed in "
                                           f"{MFA_HEADER}")
    if _CODE.fullmatch(code) is None:
        raise refused
    enrolment = await store.get_mfa(principal)
    if enrolment is None:
        raise GatewayError("mfa_required", "enrol a TOTP seed first: POST /v1/mfa/enroll")
    try:
        seed = keyring.unwrap_totp_seed(principal, enrolment.wrapped)
    except KekError:
        raise GatewayError("store_unavailable", "the MFA seed cannot be decrypted") from None
    generator = totp(seed)
    current = int(now) // STEP
    for step in (current, current - 1, current + 1):
        try:
            generator.verify(code.encode("ascii"), step * STEP)
        except InvalidToken:
            continue
        if await store.use_mfa_step(principal, step):
            return
        break  # that step's code was already used
    raise refused
