"""The key-encryption key (KEK): a versioned keyring and AES-256-GCM envelope (DESIGN.md §3.3).

Keyring file (JSON, mode 0600)::

    {"format": "gateway-keyring/1", "current": 2,
     "versions": [{"version": 1, "key": "<base64, 32 bytes>", "created_at": "..."}, ...]}

The current version wraps; every listed version unwraps. Each wrap takes a fresh
96-bit nonce; the associated data is length-prefixed ``purpose ‖ key_id ‖ kek_version``,
so a ciphertext copied onto another record, or relabelled with another version,
fails to decrypt.

    KekError
     ├── KeyringError     the keyring file is missing, unsafe or malformed
     └── UnwrapError      one record does not decrypt (names key ID and KEK version)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
import struct
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.keys.formats import SecretStr, is_well_formed_secret
from gateway.keys.record import WrappedSecret, rfc3339

__all__ = [
    "PURPOSE_KEY_SECRET",
    "PURPOSE_TOTP_SEED",
    "PURPOSE_WEBHOOK_SECRET",
    "KekError",
    "Keyring",
    "KeyringError",
    "UnwrapError",
    "create_keyring_file",
    "generate_kek",
    "load_keyring",
    "replace_keyring_file",
]

FORMAT = "gateway-keyring/1"
PURPOSE_KEY_SECRET = b"key-secret"
PURPOSE_TOTP_SEED = b"totp-seed"
PURPOSE_WEBHOOK_SECRET = b"webhook-secret"
NONCE_LEN = 12
KEK_LEN = 32


class KekError(Exception):
    """A KEK problem; the message is safe to print and names what to fix."""


class KeyringError(KekError):
    pass


class UnwrapError(KekError):
    def __init__(self, key_id: str, kek_version: int, why: str) -> None:
        super().__init__(f"cannot decrypt the secret of key {key_id} "
                         f"(KEK version {kek_version}): {why}")
        self.key_id = key_id
        self.kek_version = kek_version


def generate_kek() -> bytes:
    return secrets.token_bytes(KEK_LEN)


def _aad(purpose: bytes, key_id: str, version: int) -> bytes:
    parts = (purpose, key_id.encode("ascii"), str(version).encode("ascii"))
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _seed_id(principal: str) -> str:
    """The ASCII identity a TOTP seed is bound to (principals may be any printable text)."""
    return "mfa:" + hashlib.sha256(principal.encode("utf-8")).hexdigest()


class Keyring:
    """Numbered KEKs, one of them current. Immutable: changes return a new keyring."""

    __slots__ = ("_aead", "_created", "_keys", "current")

    def __init__(self, keys: Mapping[int, bytes], current: int,
                 created: Mapping[int, str] | None = None) -> None:
        if current not in keys:
            raise KeyringError(f"keyring: current version {current} is not listed")
        for version, key in keys.items():
            if version < 1:
                raise KeyringError(f"keyring: version {version} must be a positive integer")
            if len(key) != KEK_LEN:
                raise KeyringError(f"keyring: version {version} is not a 256-bit key")
        self._keys = dict(keys)
        self._created = dict(created or {})
        self._aead = {v: AESGCM(k) for v, k in keys.items()}  # one object per version (§7)
        self.current = current

    def __repr__(self) -> str:
        return f"Keyring(versions={self.versions}, current={self.current})"

    @classmethod
    def generate(cls, now: datetime) -> Keyring:
        return cls({1: generate_kek()}, 1, {1: rfc3339(now) or ""})

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    def with_new_version(self, now: datetime) -> Keyring:
        """A new version (one above the highest), not current."""
        version = max(self._keys) + 1
        return Keyring({**self._keys, version: generate_kek()}, self.current,
                       {**self._created, version: rfc3339(now) or ""})

    def activated(self, version: int) -> Keyring:
        if version not in self._keys:
            raise KeyringError(f"KEK version {version} is not in the keyring "
                               f"(versions: {', '.join(map(str, self.versions))})")
        return Keyring(self._keys, version, self._created)

    def without(self, version: int) -> Keyring:
        if version not in self._keys:
            raise KeyringError(f"KEK version {version} is not in the keyring")
        if version == self.current:
            raise KeyringError(f"KEK version {version} is current; activate another first")
        keys = {v: k for v, k in self._keys.items() if v != version}
        return Keyring(keys, self.current, {v: c for v, c in self._created.items() if v in keys})

    def wrap(self, purpose: bytes, key_id: str, plaintext: bytes) -> WrappedSecret:
        """Encrypt under the current version with a fresh random nonce."""
        return self.wrap_with_nonce(purpose, key_id, plaintext, secrets.token_bytes(NONCE_LEN))

    def wrap_with_nonce(self, purpose: bytes, key_id: str, plaintext: bytes,
                        nonce: bytes) -> WrappedSecret:
        """:meth:`wrap` with the randomness as a parameter (for vectors)."""
        v = self.current
        ct = self._aead[v].encrypt(nonce, plaintext, _aad(purpose, key_id, v))
        return WrappedSecret(kek_version=v, nonce=nonce, ciphertext=ct)

    def unwrap(self, purpose: bytes, key_id: str, wrapped: WrappedSecret) -> bytes:
        aead = self._aead.get(wrapped.kek_version)
        if aead is None:
            raise UnwrapError(key_id, wrapped.kek_version,
                              "that KEK version is not in the keyring (versions: "
                              f"{', '.join(map(str, self.versions))})")
        if len(wrapped.nonce) != NONCE_LEN:
            raise UnwrapError(key_id, wrapped.kek_version, "the stored nonce is damaged")
        try:
            return aead.decrypt(wrapped.nonce, wrapped.ciphertext,
                                _aad(purpose, key_id, wrapped.kek_version))
        except InvalidTag:
            # GCM cannot tell these apart, and it should not: one opaque failure.
            raise UnwrapError(key_id, wrapped.kek_version,
                              "authentication failed — a wrong KEK for this version, or a "
                              "ciphertext that was altered or belongs to another record"
                              ) from None

    def wrap_secret(self, key_id: str, secret: SecretStr) -> WrappedSecret:
        return self.wrap(PURPOSE_KEY_SECRET, key_id, secret.hmac_key())

    def unwrap_secret(self, key_id: str, wrapped: WrappedSecret) -> SecretStr:
        raw = self.unwrap(PURPOSE_KEY_SECRET, key_id, wrapped)
        text = raw.decode("ascii", errors="replace")
        if not is_well_formed_secret(text):
            raise UnwrapError(key_id, wrapped.kek_version, "decrypted data is not a secret")
        return SecretStr(text)

    def wrap_totp_seed(self, principal: str, seed: bytes) -> WrappedSecret:
        """A principal's MFA seed (admin API), bound to the principal like a secret to its key."""
        return self.wrap(PURPOSE_TOTP_SEED, _seed_id(principal), seed)

    def unwrap_totp_seed(self, principal: str, wrapped: WrappedSecret) -> bytes:
        return self.unwrap(PURPOSE_TOTP_SEED, _seed_id(principal), wrapped)

    def to_json(self) -> bytes:
        versions = [{"version": v, "key": base64.b64encode(self._keys[v]).decode(),
                     "created_at": self._created.get(v, "")} for v in self.versions]
        return orjson.dumps({"format": FORMAT, "current": self.current, "versions": versions},
                            option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Keyring:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise KeyringError(f"keyring {where} is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise KeyringError(f"keyring {where}: expected \"format\": \"{FORMAT}\"")
        keys: dict[int, bytes] = {}
        created: dict[int, str] = {}
        entries = doc.get("versions")
        if not isinstance(entries, list) or not entries:
            raise KeyringError(f"keyring {where}: \"versions\" must be a non-empty list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or type(entry.get("version")) is not int:
                raise KeyringError(f"keyring {where}: versions[{i}] needs an integer \"version\"")
            v = entry["version"]
            if v in keys:
                raise KeyringError(f"keyring {where}: version {v} is listed twice")
            try:
                keys[v] = base64.b64decode(str(entry.get("key", "")), validate=True)
            except binascii.Error:
                raise KeyringError(f"keyring {where}: version {v} key is not base64") from None
            created[v] = str(entry.get("created_at", ""))
        current = doc.get("current")
        if type(current) is not int:
            raise KeyringError(f"keyring {where}: \"current\" must be an integer")
        try:
            return cls(keys, current, created)
        except KeyringError as exc:
            raise KeyringError(f"{exc} ({where})") from None


def load_keyring(path: str | os.PathLike[str]) -> Keyring:
    """Read a keyring file, refusing one that the group or others may read or write."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyringError(f"keyring {p} does not exist; create it with "
                           "`gateway kek generate --config FILE`") from None
    except OSError as exc:
        raise KeyringError(f"cannot open keyring {p}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            raise KeyringError(f"keyring {p} has mode {mode:04o}: it must not be accessible "
                               f"to group or others; run `chmod 600 {p}`")
        data = f.read()
    return Keyring.from_json(data, str(p))


def create_keyring_file(path: str | os.PathLike[str], keyring: Keyring) -> None:
    """Write a new keyring file (mode 0600); refuse to overwrite an existing one."""
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyringError(f"keyring {p} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeyringError(f"cannot create keyring {p}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(keyring.to_json())
        f.flush()
        os.fsync(f.fileno())


def replace_keyring_file(path: str | os.PathLike[str], keyring: Keyring) -> None:
    """Atomically replace a keyring file (write a 0600 sibling, fsync, rename)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(keyring.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyringError(f"cannot write keyring {p}: {exc.strerror}") from None
