"""Find our key IDs and secrets in files (``gateway scan``, DESIGN §4.1 "Scan").

A candidate counts only if it has the prefix, length and alphabet *and* a correct
checksum, so look-alikes are not reported. Symlinks are never followed, special files
are never opened, a file with a NUL byte in its first 8 KiB is binary and skipped,
and files over ``max_size`` are skipped (and said so). No store, no network: what to
do with a finding is the caller's business.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from gateway.keys.formats import SECRET_PREFIX, is_well_formed_key_id, is_well_formed_secret

__all__ = ["DEFAULT_MAX_SIZE", "Finding", "ScanError", "Skipped", "scan_bytes", "scan_paths"]

DEFAULT_MAX_SIZE = 10 * 1024 * 1024
BINARY_PROBE = 8192
STDIN = "-"
_CANDIDATE = re.compile(rb"gws_[0-9A-Za-z]{49}|gwk_[0-9A-Za-z]{28}")
_MASK_KEEP = len(SECRET_PREFIX) + 4  # 4 of 43 random characters: identifies, cannot sign

Kind = Literal["secret", "key_id"]


class ScanError(ValueError):
    """A path given on the command line does not exist."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One checksum-valid key ID or secret; ``token`` is never printed."""

    path: str
    line: int
    kind: Kind
    token: str = field(repr=False)

    @property
    def masked(self) -> str:
        """A key ID in full (it is public); a secret's prefix and 4 characters."""
        return self.token if self.kind == "key_id" else self.token[:_MASK_KEEP] + "…"

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file not scanned, and why (binary files are skipped silently)."""

    path: str
    reason: str


def scan_bytes(data: bytes, path: str) -> list[Finding]:
    """Every checksum-valid key ID and secret in ``data``, with its 1-based line."""
    found: list[Finding] = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if b"gw" not in line:
            continue
        for m in _CANDIDATE.finditer(line):
            token = m.group().decode("ascii")
            if token.startswith(SECRET_PREFIX):
                if is_well_formed_secret(token):
                    found.append(Finding(path, number, "secret", token))
            elif is_well_formed_key_id(token):
                found.append(Finding(path, number, "key_id", token))
    return found


def scan_paths(paths: Sequence[str], *, max_size: int = DEFAULT_MAX_SIZE,
               stdin: BinaryIO | None = None) -> Iterator[Finding | Skipped]:
    """Scan files, directories (recursively: a directory's files in name order, then
    its subdirectories) and ``-`` (``stdin``).
    Raises :class:`ScanError` first if a given path does not exist."""
    for path in paths:
        if path != STDIN and not os.path.lexists(path):
            raise ScanError(f"{path}: no such file or directory")
    for path in paths:
        if path == STDIN:
            if stdin is not None:
                yield from _scan_data(path, stdin.read(max_size + 1), max_size)
            continue
        for file in _files(path):
            yield from (file,) if isinstance(file, Skipped) else _scan_file(file, max_size)


def _files(path: str) -> Iterator[str | Skipped]:
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        yield Skipped(path, exc.strerror or "unreadable")
        return
    if stat.S_ISLNK(mode):
        yield Skipped(path, "symlink, not followed")
    elif stat.S_ISREG(mode):
        yield path
    elif stat.S_ISDIR(mode):
        errors: list[OSError] = []
        for root, dirs, files in os.walk(path, onerror=errors.append, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                if not os.path.islink(full):
                    yield full  # special files are weeded out by _scan_file's fstat
        for error in errors:  # an unreadable directory
            yield Skipped(str(error.filename or path), error.strerror or "unreadable")
    else:
        yield Skipped(path, "not a regular file")


def _scan_file(path: str, max_size: int) -> Iterator[Finding | Skipped]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        yield Skipped(path, exc.strerror or "unreadable")
        return
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        if st.st_size > max_size:
            yield Skipped(path, f"larger than --max-size ({max_size} bytes)")
            return
        try:
            data = f.read(max_size + 1)
        except OSError as exc:
            yield Skipped(path, exc.strerror or "unreadable")
            return
    yield from _scan_data(path, data, max_size)


def _scan_data(path: str, data: bytes, max_size: int) -> Iterator[Finding | Skipped]:
    if len(data) > max_size:
        yield Skipped(path, f"larger than --max-size ({max_size} bytes)")
    elif b"\0" not in data[:BINARY_PROBE]:
        yield from scan_bytes(data, path)
