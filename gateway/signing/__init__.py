"""Signature verification: pure functions, no I/O, ``now`` passed in.

Two steps, so the secret is needed only once the key ID is known::

    auth = parse(request, policy, now)      # scheme, key ID, clock window, policy
    secret = <look up auth.key_id>          # the caller's business
    facts = auth.verify(secret, body)       # MAC, body digest -> Verified

Every failure is a ``SignatureError`` with a catalogue code (DESIGN §5); nothing
else escapes. Messages never contain the secret or the expected signature.
"""

from __future__ import annotations

from ..errors import SignatureError
from .message import EMPTY_BODY, Body, Derived, Policy, Request, Verified
from .rfc9421 import RFC9421Auth, parse_signature
from .sigv4 import SigV4Auth, parse_header_auth, parse_query_auth, query_auth_params

__all__ = ["EMPTY_BODY", "Body", "Derived", "Policy", "RFC9421Auth", "Request", "SigV4Auth",
           "SignatureError", "Verified", "parse"]


def parse(request: Request, policy: Policy, now: float) -> SigV4Auth | RFC9421Auth:
    """Find the one authentication scheme the request uses and parse it.

    SigV4 header auth, SigV4 query auth and RFC 9421 are mutually exclusive
    (DESIGN §2.1 "One scheme per request").
    """
    index = request._index
    authorization = index.get("authorization", ())
    target = request.target
    query_params = query_auth_params(target[target.index("?") + 1:] if "?" in target else None)
    rfc9421 = "signature-input" in index or "signature" in index
    used = bool(authorization) + bool(query_params) + rfc9421
    if used > 1:
        raise SignatureError("ambiguous_auth", "the request carries more than one signature scheme")
    if len(authorization) > 1:
        raise SignatureError("ambiguous_auth", "the Authorization header appears more than once")
    if authorization:
        return parse_header_auth(request, authorization[0], policy, now)
    if query_params:
        return parse_query_auth(request, query_params, policy, now)
    if rfc9421:
        return parse_signature(request, policy, now)
    raise SignatureError("missing_auth", "the request is not signed")
