"""Credentials: an access key ID and its secret, optionally with the previous key
of a rotation (two-key mode, DESIGN §4.1).

A credentials file is the JSON answer of key creation (``POST /v1/keys``,
``rotate``, ``self/rotate``) saved with mode 0600; at least ``key_id`` and
``secret``, optionally ``"previous": {"key_id": ..., "secret": ...}``. Every
other member is ignored.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import CredentialsError

__all__ = ["ENV_CREDENTIALS_FILE", "ENV_KEY_ID", "ENV_SECRET", "Credentials"]

ENV_KEY_ID = "GATEWAY_KEY_ID"
ENV_SECRET = "GATEWAY_SECRET"
ENV_CREDENTIALS_FILE = "GATEWAY_CREDENTIALS_FILE"


def _check_key_id(key_id: object) -> str:
    # SigV4 puts it in Credential=ID/scope (no "/", ","), RFC 9421 in keyid="..." (no '"', "\")
    if not isinstance(key_id, str) or not key_id or not key_id.isascii() or any(
            c in '/,"\\' or not c.isprintable() or c.isspace() for c in key_id):
        raise CredentialsError("the key ID must be non-empty printable ASCII without "
                               "spaces, '/', ',', '\"' or '\\'")
    return key_id


def _check_secret(secret: object) -> str:
    if not isinstance(secret, str) or not secret or not (secret.isascii()
                                                         and secret.isprintable()):
        raise CredentialsError("the secret must be non-empty printable ASCII, exactly as printed "
                               "when the key was created")
    return secret


@dataclass(frozen=True)
class Credentials:
    """A key ID and its secret; ``previous`` holds the other key of a rotation.

    The secret is the HMAC key as ASCII bytes, exactly as printed at creation
    (DESIGN §2.1); ``repr`` never shows it. ``path`` is the file the credentials
    came from: adapters reload them when that file changes.
    """

    key_id: str
    secret: str = field(repr=False)
    previous: Credentials | None = None
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_key_id(self.key_id)
        _check_secret(self.secret)
        if self.previous is not None:
            if self.previous.previous is not None:
                raise CredentialsError("only one previous key is kept (two-key mode)")
            if self.previous.key_id == self.key_id:
                raise CredentialsError("the previous key has the same key ID as the current one")

    def __repr__(self) -> str:
        extra = f", previous={self.previous!r}" if self.previous else ""
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"Credentials(key_id={self.key_id!r}, secret='***'{extra}{where})"

    @property
    def secret_bytes(self) -> bytes:
        return self.secret.encode("ascii")

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self.keys())

    def keys(self) -> tuple[Credentials, ...]:
        """The current key, then the previous one if any (each without ``previous``)."""
        current = Credentials(self.key_id, self.secret)
        return (current,) if self.previous is None else (current, self.previous)

    @classmethod
    def from_env(cls) -> Credentials:
        """From ``GATEWAY_KEY_ID`` and ``GATEWAY_SECRET``."""
        key_id = os.environ.get(ENV_KEY_ID)
        secret = os.environ.get(ENV_SECRET)
        if not key_id or not secret:
            missing = [n for n, v in ((ENV_KEY_ID, key_id), (ENV_SECRET, secret)) if not v]
            raise CredentialsError(f"{' and '.join(missing)} not set in the environment")
        return cls(key_id, secret)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None) -> Credentials:
        """From a credentials file: ``path``, or else ``GATEWAY_CREDENTIALS_FILE``.

        A file that group or others may read or write is refused: the secret
        would not be secret any more.
        """
        if path is None:
            path = os.environ.get(ENV_CREDENTIALS_FILE)
            if not path:
                raise CredentialsError(f"no credentials file given and {ENV_CREDENTIALS_FILE} "
                                       "is not set")
        file = Path(path).expanduser()
        try:
            with open(file, "rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                if mode & 0o077:
                    raise CredentialsError(
                        f"{file} is accessible by group or others (mode "
                        f"{stat.filemode(mode)}); run: chmod 600 {file}")
                raw = handle.read()
        except OSError as exc:
            raise CredentialsError(f"cannot read the credentials file {file}: "
                                   f"{exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            raise CredentialsError(f"{file} is not JSON (expected the answer of key "
                                   "creation, with key_id and secret)") from None
        return cls._from_mapping(data, file)

    @classmethod
    def _from_mapping(cls, data: Any, file: Path) -> Credentials:
        def pair(obj: Any, where: str) -> tuple[str, str]:
            if not isinstance(obj, dict) or not isinstance(obj.get("key_id"), str) \
                    or not isinstance(obj.get("secret"), str):
                raise CredentialsError(f"{file}: {where} must be an object with string "
                                       "members key_id and secret")
            return obj["key_id"], obj["secret"]

        key_id, secret = pair(data, "the file")
        previous = None
        if data.get("previous") is not None:
            previous = cls(*pair(data["previous"], '"previous"'))
        return cls(key_id, secret, previous, file)
