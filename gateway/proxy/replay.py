"""Per-process replay guard (DESIGN §2.1 "Replay protection").

A token is recorded only after its MAC verified, and kept until the request could
no longer pass the clock check. Tokens are grouped by the second they expire in, so
forgetting them costs nothing per request. The Redis tier shares this across
instances; this guard is what remains when Redis is down.
"""

from __future__ import annotations

__all__ = ["ReplayGuard"]


class ReplayGuard:
    def __init__(self) -> None:
        self._expiry: dict[bytes, int] = {}
        self._buckets: dict[int, list[bytes]] = {}
        self._purged_to = 0

    def __len__(self) -> int:
        return len(self._expiry)

    def first_use(self, token: bytes, until: int, now: float) -> bool:
        """Record ``token`` until ``until`` (epoch second); False if it was already seen."""
        second = int(now)
        if second > self._purged_to:
            self._purge(second)
        known = self._expiry.get(token)
        if known is not None and known > now:
            return False
        self._expiry[token] = until
        self._buckets.setdefault(until, []).append(token)
        return True

    def _purge(self, second: int) -> None:
        for bucket in [b for b in self._buckets if b <= second]:
            for token in self._buckets.pop(bucket):
                if self._expiry.get(token, second + 1) <= second:
                    del self._expiry[token]
        self._purged_to = second
