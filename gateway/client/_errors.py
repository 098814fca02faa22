"""The SDK's exceptions. Messages name files and settings, never a secret::

    ClientError
     ├── CredentialsError    a key or credentials file that cannot be used
     └── UnsignableBody      a streamed body that cannot be hashed
"""

from __future__ import annotations

__all__ = ["ClientError", "CredentialsError", "UnsignableBody"]


class ClientError(Exception):
    """Base class of every error the SDK raises itself."""


class CredentialsError(ClientError, ValueError):
    """Missing, malformed or unsafely stored credentials."""


class UnsignableBody(ClientError, ValueError):
    """The body is a stream (iterator, generator, async iterable) whose bytes are
    not known before sending, so no digest can be signed for it."""
