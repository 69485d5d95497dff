"""Plain-text tables and a progress bar for the command line (no curses, no deps)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

CLEAR = "\x1b[H\x1b[2J"  # cursor home + clear screen, for live views on a terminal


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Columns aligned: text left, numbers right."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [
        all(isinstance(row[i], int | float) for row in rows) and bool(rows)
        for i in range(len(header))
    ]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric,
                                                                        strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "-" if v is None else str(v)


class Progress:
    """``[#######.......]  45%  4,500/10,000  12,000/s`` redrawn in place on ``stream``."""

    def __init__(self, total: int, label: str, stream: TextIO, enabled: bool) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.enabled = enabled
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        rate = self.done / max(now - self.started, 1e-9)
        self.stream.write(
            f"\r{self.label:<8} [{bar}] {frac:4.0%}  {self.done:,}/{self.total:,}  {rate:,.0f}/s"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            if self.done < self.total:  # stopped early: show where
                self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
