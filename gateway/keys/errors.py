"""Errors of the key lifecycle, each with its admin-API catalogue code (DESIGN.md §5).

    GatewayError
     └── KeyLifecycleError
          ├── MalformedKeyId      invalid_request   (wrong shape or checksum; no lookup made)
          ├── KeyNotFound         key_not_found
          ├── PolicyViolation     policy_violation  (lifetime, grace, state, bad field)
          └── KeyLimitReached     key_limit_reached
"""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = [
    "KeyLifecycleError",
    "KeyLimitReached",
    "KeyNotFound",
    "MalformedKeyId",
    "PolicyViolation",
]


class KeyLifecycleError(GatewayError):
    """A key operation refused; ``message`` is safe to show (it never holds a secret)."""


class MalformedKeyId(KeyLifecycleError):
    def __init__(self) -> None:
        super().__init__("invalid_request", "malformed key ID")


class KeyNotFound(KeyLifecycleError):
    def __init__(self, key_id: str) -> None:
        super().__init__("key_not_found", f"no such key: {key_id}")
        self.key_id = key_id


class PolicyViolation(KeyLifecycleError):
    def __init__(self, message: str) -> None:
        super().__init__("policy_violation", message)


class KeyLimitReached(KeyLifecycleError):
    def __init__(self, principal: str, limit: int) -> None:
        super().__init__(
            "key_limit_reached",
            f"principal {principal!r} already has {limit} active key(s), the policy's maximum",
        )
        self.principal = principal
        self.limit = limit
