"""Access key IDs and secrets: recognisable, checksummed, random (DESIGN.md §1, §3).

GitHub-token style: a fixed prefix, random base62 characters from :mod:`secrets`,
and a 6-character base62 CRC32 of everything before it. The checksum lets the
gateway refuse a mistyped or invented key ID with no cache or store lookup
(DESIGN.md §3.1), and lets a secret scanner confirm a leaked secret offline.

- key ID: ``gwk_`` + 22 random (131 bits) + 6 checksum — ``^gwk_[0-9A-Za-z]{28}$``
- secret: ``gws_`` + 43 random (256 bits) + 6 checksum — ``^gws_[0-9A-Za-z]{49}$``

Neither contains ``/``, ``:``, ``"`` or ``\\``, so both fit a SigV4 credential,
``curl --user ID:SECRET`` and an RFC 9421 ``keyid``. The HMAC key used for signing
is the ASCII bytes of the secret exactly as printed.
"""

from __future__ import annotations

import re
import secrets
import zlib
from typing import Final

__all__ = [
    "KEY_ID_PREFIX",
    "KEY_ID_RE",
    "SECRET_PREFIX",
    "SECRET_RE",
    "SecretStr",
    "generate_key_id",
    "generate_secret",
    "is_well_formed_key_id",
    "is_well_formed_secret",
    "key_id_from_random",
    "secret_from_random",
]

ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_PREFIX: Final = "gwk_"
SECRET_PREFIX: Final = "gws_"
KEY_ID_RANDOM: Final = 22  # 22 * log2(62) = 131 bits
SECRET_RANDOM: Final = 43  # 43 * log2(62) = 256 bits
CHECKSUM_LEN: Final = 6  # 62**6 > 2**32: every CRC32 fits
KEY_ID_LEN: Final = len(KEY_ID_PREFIX) + KEY_ID_RANDOM + CHECKSUM_LEN
SECRET_LEN: Final = len(SECRET_PREFIX) + SECRET_RANDOM + CHECKSUM_LEN

# re.ASCII and fullmatch: no Unicode digits, no trailing newline sneaking past "$".
KEY_ID_RE: Final = re.compile(r"gwk_[0-9A-Za-z]{28}", re.ASCII)
SECRET_RE: Final = re.compile(r"gws_[0-9A-Za-z]{49}", re.ASCII)


def _checksum(body: str) -> str:
    n = zlib.crc32(body.encode("ascii"))
    out = []
    for _ in range(CHECKSUM_LEN):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def _from_random(prefix: str, random_part: str, length: int) -> str:
    if len(random_part) != length or not all(c in ALPHABET for c in random_part):
        raise ValueError(f"expected {length} base62 characters")
    body = prefix + random_part
    return body + _checksum(body)


def key_id_from_random(random_part: str) -> str:
    """The key ID for 22 given base62 characters (for test vectors)."""
    return _from_random(KEY_ID_PREFIX, random_part, KEY_ID_RANDOM)


def secret_from_random(random_part: str) -> str:
    """The secret for 43 given base62 characters (for test vectors)."""
    return _from_random(SECRET_PREFIX, random_part, SECRET_RANDOM)


def generate_key_id() -> str:
    """A new random key ID."""
    return key_id_from_random(_random(KEY_ID_RANDOM))


def generate_secret() -> str:
    """A new random secret. Wrap it in :class:`SecretStr` before it travels."""
    return secret_from_random(_random(SECRET_RANDOM))


def _well_formed(s: object, pattern: re.Pattern[str]) -> bool:
    if not isinstance(s, str) or not s.isascii() or pattern.fullmatch(s) is None:
        return False
    return _checksum(s[:-CHECKSUM_LEN]) == s[-CHECKSUM_LEN:]


def is_well_formed_key_id(s: object) -> bool:
    """True iff ``s`` has the key-ID prefix, length, alphabet and a correct checksum.

    Pure: no I/O. The gateway calls it before any cache or store lookup."""
    return _well_formed(s, KEY_ID_RE)


def is_well_formed_secret(s: object) -> bool:
    """True iff ``s`` has the secret prefix, length, alphabet and a correct checksum."""
    return _well_formed(s, SECRET_RE)


class SecretStr:
    """A secret that cannot print itself: ``repr``/``str`` show only a masked form."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret exactly as printed at creation."""
        return self._value

    def hmac_key(self) -> bytes:
        """The HMAC key: the ASCII bytes of the secret (DESIGN.md §2.1)."""
        return self._value.encode("ascii")

    def masked(self) -> str:
        return self._value[: len(SECRET_PREFIX)] + "…" if self._value else ""

    def __repr__(self) -> str:
        return f"SecretStr({self.masked()!r})"

    __str__ = masked

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretStr):
            return NotImplemented
        return secrets.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)
