"""Client SDK: sign requests to the gateway from Python (DESIGN §4.1).

    from gateway.client import Credentials, RequestsAuth
    requests.get(url, auth=RequestsAuth(Credentials.from_file()))

``Credentials`` (``from_env()``, ``from_file()``), the signers ``SigV4Signer``
and ``RFC9421Signer``, and one adapter per HTTP client: ``RequestsAuth``,
``HttpxAuth`` (sync and async) and ``aiohttp_middleware()``. Each adapter
takes ``credentials``, ``scheme="sigv4" | "rfc9421"``, ``region="local"`` and
``service="gateway"``, and runs in two-key mode whenever the credentials hold a
``previous`` key. ``rotate_if_expiring(credentials_file, base_url, within="14d")``
rotates a key that is about to expire and rewrites its credentials file (needs
scope ``self:rotate``). A response announcing ``Gateway-Key-Expires`` is logged
once per process per key (logger ``gateway.client``).

Importing this package imports no HTTP library and nothing of the server: the
adapters are loaded on first use, each with the library it adapts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._credentials import Credentials
from ._errors import ClientError, CredentialsError, UnsignableBody
from ._signers import RFC9421Signer, SigV4Signer

if TYPE_CHECKING:
    from ._aiohttp import SigningMiddleware, aiohttp_middleware
    from ._httpx import HttpxAuth
    from ._requests import RequestsAuth
    from ._rotate import RotationError, rotate_if_expiring

__all__ = ["ClientError", "Credentials", "CredentialsError", "HttpxAuth", "RFC9421Signer",
           "RequestsAuth", "RotationError", "SigV4Signer", "SigningMiddleware",
           "UnsignableBody", "aiohttp_middleware", "rotate_if_expiring"]

_LAZY = {"RequestsAuth": "._requests", "HttpxAuth": "._httpx",
         "aiohttp_middleware": "._aiohttp", "SigningMiddleware": "._aiohttp",
         "rotate_if_expiring": "._rotate", "RotationError": "._rotate"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
