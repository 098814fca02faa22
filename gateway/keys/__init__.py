"""Access keys: formats, the record, and the lifecycle rules (DESIGN.md §3 "keys").

Light on purpose: importing :mod:`gateway.keys` pulls in no store or crypto code;
import :mod:`gateway.keys.lifecycle` for :class:`KeyManager`.
"""

from gateway.keys.errors import (
    KeyLifecycleError,
    KeyLimitReached,
    KeyNotFound,
    MalformedKeyId,
    PolicyViolation,
)
from gateway.keys.formats import (
    KEY_ID_RE,
    SECRET_RE,
    SecretStr,
    generate_key_id,
    generate_secret,
    is_well_formed_key_id,
    is_well_formed_secret,
)
from gateway.keys.record import AuditEntry, KeyChange, KeyRecord, RateLimit, WrappedSecret

__all__ = [
    "KEY_ID_RE",
    "SECRET_RE",
    "AuditEntry",
    "KeyChange",
    "KeyLifecycleError",
    "KeyLimitReached",
    "KeyNotFound",
    "KeyRecord",
    "MalformedKeyId",
    "PolicyViolation",
    "RateLimit",
    "SecretStr",
    "WrappedSecret",
    "generate_key_id",
    "generate_secret",
    "is_well_formed_key_id",
    "is_well_formed_secret",
]
