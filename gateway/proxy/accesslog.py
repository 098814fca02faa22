"""The access log: one JSON line per request, buffered and written in the background
(DESIGN §7: no ``logging`` call per request). Never holds a secret or a signature."""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO

import orjson

__all__ = ["AccessLog"]


class AccessLog:
    def __init__(self, *, enabled: bool, out: BinaryIO | None = None,
                 interval: float = 0.5) -> None:
        self.enabled = enabled
        self._out = out if out is not None else sys.stdout.buffer
        self._interval = interval
        self._lines: list[bytes] = []

    def write(self, entry: dict[str, object]) -> None:
        if self.enabled:
            self._lines.append(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._out.write(b"".join(lines))
            self._out.flush()

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                self.flush()
        finally:
            self.flush()
