"""Header hygiene between client, gateway and upstream (DESIGN §2.1, §3 "proxy").

Pure functions over lists of (name, value) pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

__all__ = ["HOP_BY_HOP", "TrustedProxies", "raw_response_headers", "response_headers",
           "upstream_headers"]

Headers = list[tuple[str, str]]

# RFC 9110 §7.6.1, plus the legacy ones every proxy strips
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"})
# the client's credentials, which the upstream must never see (or log)
AUTH_HEADERS = frozenset({"authorization", "signature", "signature-input", "x-amz-date",
                          "x-amz-content-sha256", "x-amz-security-token"})
# recomputed by the gateway from what it saw (or believed, from a trusted proxy)
FORWARDING = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-proto",
                        "x-forwarded-host", "x-real-ip"})


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    # headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1)
    return {t.strip().lower() for n, v in headers if n.lower() == "connection"
            for t in v.split(",") if t.strip()}


class TrustedProxies:
    """``[server] trusted_proxies``: peers whose forwarding headers are believed."""

    def __init__(self, cidrs: Sequence[str]) -> None:
        self._networks: list[IPv4Network | IPv6Network] = [
            ip_network(c, strict=False) for c in cidrs]

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        if not self._networks:
            return False
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is IPv4
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks)

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The rightmost X-Forwarded-For entry that is not itself a trusted proxy."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if hop and not self.trusts(hop):
                return hop
        return peer


# Host and Content-Length are the forwarder's to write; Expect was answered here
# (X-Request-Id: the gateway's own comes with the identity headers)
_NOT_FORWARDED = HOP_BY_HOP | AUTH_HEADERS | {"host", "content-length", "expect", "x-request-id"}


def upstream_headers(received: Sequence[tuple[str, str]], *, peer: str, peer_trusted: bool,
                     scheme: str, host: str | None, identity: Sequence[tuple[str, str]],
                     connection: Sequence[str] = ()) -> Headers:
    """What the upstream receives: the client's end-to-end headers, less its
    credentials, hop-by-hop headers (``connection``: the values of its Connection
    headers, which name more of them), ``X-Gateway-*`` and (from an untrusted peer)
    forwarding headers; then ours: identity, ``X-Forwarded-*``."""
    drop = _NOT_FORWARDED
    if connection:
        drop = drop | {t.strip().lower() for v in connection for t in v.split(",") if t.strip()}
    out: Headers = []
    forwarded_for = proto = fhost = None
    for name, value in received:
        lname = name.lower()
        if lname in drop or lname.startswith("x-gateway-"):
            continue
        if lname in FORWARDING:
            if peer_trusted:
                if lname == "x-forwarded-for":
                    forwarded_for = value if forwarded_for is None else f"{forwarded_for}, {value}"
                elif lname == "x-forwarded-proto":
                    proto = value
                elif lname == "x-forwarded-host":
                    fhost = value
                else:
                    out.append((name, value))
            continue
        out.append((name, value))
    out.extend(identity)
    out.append(("X-Forwarded-For", f"{forwarded_for}, {peer}" if forwarded_for else peer))
    out.append(("X-Forwarded-Proto", proto or scheme))
    if fhost or host:
        out.append(("X-Forwarded-Host", fhost or host or ""))
    return out


def response_headers(received: Iterable[tuple[str, str]]) -> Headers:
    """The upstream's end-to-end response headers (hop-by-hop ones removed)."""
    pairs = list(received)
    drop = HOP_BY_HOP | _connection_tokens(pairs)
    return [(n, v) for n, v in pairs if n.lower() not in drop]


_RAW_HOP_BY_HOP = frozenset(n.encode("ascii") for n in HOP_BY_HOP)
_RAW_DROP = {True: _RAW_HOP_BY_HOP, False: _RAW_HOP_BY_HOP | {b"content-length"}}
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})  # name no other header


def raw_response_headers(received: Sequence[tuple[bytes, bytes]], *, keep_length: bool
                         ) -> tuple[list[bytes], bool]:
    """:func:`response_headers` over the raw lines of a parsed response (llhttp has
    refused CR, LF and NUL in them), as pieces of the head to join — ``Name``, ``: ``,
    ``value``, CRLF — and whether a ``Date`` is among them; ``Content-Length`` is
    dropped too unless ``keep_length``."""
    drop = _RAW_DROP[keep_length]
    out: list[bytes] = []
    named: set[bytes] = set()  # more hop-by-hop headers, named in Connection
    dated = False
    for name, value in received:
        lname = name.lower()
        if lname in drop:
            if lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                named.update({t.strip().lower() for t in value.split(b",")} - drop)
            continue
        dated = dated or lname == b"date"
        out += (name, b": ", value, b"\r\n")
    if named:  # rare ("Connection: keep-alive" names nothing new): filter again
        out = []
        for name, value in received:
            if name.lower() not in drop and name.lower() not in named:
                out += (name, b": ", value, b"\r\n")
    return out, dated
