"""The error catalogue (DESIGN.md §5): one machine-readable code and one HTTP status each.

Every rejection the gateway sends is ``{"error": code, "message": sentence}``. The
message is for people and must never contain a secret or an expected signature;
details that help an operator go to the log, not to the client.

    GatewayError
     └── SignatureError      raised by gateway.signing (pure, no I/O)
"""

from __future__ import annotations

from typing import Final

__all__ = ["CATALOGUE", "GatewayError", "SignatureError"]

CATALOGUE: Final[dict[str, int]] = {
    "malformed_request": 400,
    "path_not_normalized": 400,
    "malformed_auth": 400,
    "ambiguous_auth": 400,
    "unsupported_payload": 400,
    "invalid_request": 400,
    "signature_invalid": 401,
    "missing_auth": 401,
    "request_expired": 401,
    "replayed": 401,
    "key_expired": 401,
    "key_revoked": 401,
    "key_inactive": 401,
    "scope_denied": 403,
    "mfa_required": 403,
    "source_denied": 403,
    "route_not_found": 404,
    "key_not_found": 404,
    "event_not_found": 404,
    "key_limit_reached": 409,
    "body_too_large": 413,
    "policy_violation": 422,
    "rate_limited": 429,
    "headers_too_large": 431,
    "not_implemented": 501,
    "upstream_unreachable": 502,
    "store_unavailable": 503,
    "upstream_timeout": 504,
}


class GatewayError(Exception):
    """A rejection with a catalogue code. ``status`` follows from the code."""

    code: str
    status: int
    message: str

    def __init__(self, code: str, message: str) -> None:
        status = CATALOGUE.get(code)
        if status is None:  # a programming error: codes are added to the catalogue first
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class SignatureError(GatewayError):
    """A request whose authentication cannot be parsed, is out of policy, or does not verify."""
