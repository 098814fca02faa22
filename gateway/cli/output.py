"""CLI output: aligned tables for people, JSON for scripts, a progress bar on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import orjson

__all__ = ["ProgressBar", "print_fields", "print_json", "print_table"]


def print_json(doc: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                out: TextIO | None = None) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    out = out or sys.stdout
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        out.write("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=False))
                  + ("  " if len(row) > 1 else "") + row[-1] + "\n")


def print_fields(doc: dict[str, Any], out: TextIO | None = None) -> None:
    """One ``name  value`` line per field, names aligned."""
    out = out or sys.stdout
    width = max(len(k) for k in doc)
    for k, v in doc.items():
        out.write(f"  {k.ljust(width)}  {_cell(v)}\n")


class ProgressBar:
    """Progress on stderr: one redrawn line on a terminal (at most 10 redraws a second),
    otherwise a line at the start, at each quarter and at the end."""

    def __init__(self, label: str, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._label = label
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._clock = clock
        self._start = clock()
        self._last_draw = -1.0
        self._quarter = -1
        self._open = False

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        elapsed = max(now - self._start, 1e-9)
        rate = done / elapsed
        pct = 100 * done // total if total else 100
        if self._tty:
            if done < total and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            filled = 30 * done // total if total else 30
            eta = f"eta {(total - done) / rate:.0f}s" if rate and done < total else ""
            self._stream.write(f"\r{self._label} [{'#' * filled}{'.' * (30 - filled)}] "
                               f"{done:,}/{total:,} {pct:3d}% {rate:,.0f}/s {eta}\x1b[K")
            self._open = done < total
            if not self._open:
                self._stream.write("\n")
        else:
            quarter = 4 * done // total if total else 4
            if quarter == self._quarter:
                return
            self._quarter = quarter
            self._stream.write(f"{self._label}: {done:,}/{total:,} ({pct}%) "
                               f"{elapsed:.1f}s {rate:,.0f}/s\n")
        self._stream.flush()

    def close(self) -> None:
        """End an unfinished bar's line (after an error), so the message starts afresh."""
        if self._open:
            self._stream.write("\n")
            self._open = False
