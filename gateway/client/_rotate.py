"""``rotate_if_expiring()``: a key that keeps itself valid (DESIGN §4.1), in one call
from a CI job, a cron line or a daemon's timer::

    from gateway.client import rotate_if_expiring
    rotate_if_expiring("~/.config/gateway/ci.json", "https://gateway.example")

It asks ``GET /_gateway/whoami`` for the key's deadline (the earlier of
``expires_at`` and ``inactive_after``); inside ``within`` of it, it calls
``POST /_gateway/self/rotate`` (the key needs scope ``self:rotate``) and rewrites
the credentials file atomically — a temporary file in the same directory, mode
0600, ``os.replace`` — with the new key as current and the old one as
``previous``, so every adapter reading the file (two-key mode) carries on through
the old key's grace period without a failed call.

Uses only the standard library (``urllib.request``), imported on the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ._credentials import ENV_CREDENTIALS_FILE, Credentials
from ._errors import ClientError, CredentialsError
from ._signers import RFC9421Signer, SigV4Signer, split_url

__all__ = ["RotationError", "rotate_if_expiring"]

WHOAMI = "/_gateway/whoami"
SELF_ROTATE = "/_gateway/self/rotate"
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)", re.ASCII)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class RotationError(ClientError):
    """The gateway refused ``whoami`` or the rotation, or could not be reached.
    ``status`` and ``code`` are the gateway's answer (None when there was none)."""

    def __init__(self, message: str, *, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _seconds(value: str | float | timedelta, what: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{what} must be a duration like 90s, 12h or 14d, not {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _instant(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise RotationError(f"whoami answered a time that is not RFC 3339: {value[:40]!r}") \
            from None


def deadline(record: dict[str, Any]) -> float | None:
    """The earlier of ``expires_at`` and ``inactive_after`` (epoch seconds), or None."""
    times = [t for t in (_instant(record.get("expires_at")),
                         _instant(record.get("inactive_after"))) if t is not None]
    return min(times) if times else None


def _call(signer: SigV4Signer | RFC9421Signer, key: Credentials, method: str, url: str,
          body: bytes, timeout: float) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    _, host, _ = split_url(url)
    headers = [("Host", host)]
    if body:
        headers.append(("Content-Type", "application/json"))
    headers += signer.sign(key, method, url, headers, body)
    request = urllib.request.Request(url, data=body or None, method=method,
                                     headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RotationError(f"{method} {url}: cannot reach the gateway ({reason})") from exc
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {}
    if not 200 <= status < 300:
        code = doc.get("error") if isinstance(doc, dict) else None
        message = doc.get("message") if isinstance(doc, dict) else None
        raise RotationError(f"{method} {url}: {status} {code or ''} {message or ''}".rstrip(),
                            status=status, code=code)
    return status, doc


def _write_atomically(handle: Any, temp: Path, path: Path, doc: dict[str, Any]) -> None:
    with handle:
        handle.write(json.dumps(doc, indent=2).encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    with contextlib.suppress(OSError):  # the rename itself, durable (not on every platform)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def rotate_if_expiring(credentials_file: str | os.PathLike[str] | None, base_url: str,
                       within: str | float | timedelta = "14d", *, scheme: str = "sigv4",
                       region: str = "local", service: str = "gateway",
                       grace: str | None = None, timeout: float = 30.0,
                       now: float | None = None) -> bool:
    """Rotate the key in ``credentials_file`` (or ``GATEWAY_CREDENTIALS_FILE``) when
    its deadline is within ``within`` (a duration: ``"14d"``, seconds, a timedelta)
    of ``now``; return whether it rotated.

    ``base_url`` is the gateway's data-plane URL (``https://gateway.example``).
    ``grace`` (``"24h"``) asks for the old key's grace period (default: the
    gateway's ``[policy] rotation_grace``). Raises :class:`RotationError` when the
    gateway refuses (the key lacks ``self:rotate``: 403 ``scope_denied``) or cannot
    be reached, and :class:`CredentialsError` for an unusable credentials file.
    """
    if credentials_file is None:
        credentials_file = os.environ.get(ENV_CREDENTIALS_FILE) or ""
        if not credentials_file:
            raise CredentialsError(f"no credentials file given and {ENV_CREDENTIALS_FILE} "
                                   "is not set")
    path = Path(credentials_file).expanduser()
    window = _seconds(within, "within")
    if grace is not None:
        _seconds(grace, "grace")  # refused here rather than by the gateway
    signer: SigV4Signer | RFC9421Signer
    if scheme == "sigv4":
        signer = SigV4Signer(region=region, service=service)
    elif scheme == "rfc9421":
        signer = RFC9421Signer()
    else:
        raise ValueError(f"scheme must be 'sigv4' or 'rfc9421', not {scheme!r}")
    credentials = Credentials.from_file(path)
    current = credentials.keys()[0]  # the current key only: whoami must describe it
    base = base_url.rstrip("/")

    _, me = _call(signer, current, "GET", base + WHOAMI, b"", timeout)
    until = deadline(me)
    if until is None or until - (time.time() if now is None else now) > window:
        return False
    # the file is replaceable (directory writable) before the gateway issues a secret
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    handle = os.fdopen(fd, "wb")  # mkstemp: mode 0600, created by us alone
    try:
        body = json.dumps({"grace": grace}).encode() if grace is not None else b""
        _, issued = _call(signer, current, "POST", base + SELF_ROTATE, body, timeout)
        if not isinstance(issued, dict) or "key_id" not in issued or "secret" not in issued:
            raise RotationError(f"POST {base + SELF_ROTATE}: the answer holds no new key")
        doc = {**issued, "previous": {"key_id": current.key_id, "secret": current.secret}}
        try:
            _write_atomically(handle, temp, path, doc)
        except OSError as exc:
            raise RotationError(
                f"the gateway issued key {str(issued['key_id'])[:64]} but {path} could not be "
                f"rewritten ({exc.strerror}); {current.key_id} keeps working until its grace "
                "period ends: rotate it again with the admin API or CLI") from exc
    except BaseException:
        handle.close()
        temp.unlink(missing_ok=True)
        raise
    return True
