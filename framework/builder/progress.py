"""Progress for long work: a redrawn bar on a terminal, a few plain lines in CI, else nothing."""

from __future__ import annotations

import os
import sys
import threading
import time


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true")


class Progress:
    """Counts bytes (or items) done out of a total; safe to update from several threads."""

    def __init__(self, label: str, total: int, unit: str = "B") -> None:
        self.label, self.total, self.unit = label, max(total, 1), unit
        self.done = 0
        self._lock = threading.Lock()
        self._tty = interactive()
        self._last_draw = 0.0

    def advance(self, amount: int) -> None:
        with self._lock:
            self.done += amount
            now = time.monotonic()
            if self._tty and (now - self._last_draw > 0.1 or self.done >= self.total):
                self._last_draw = now
                self._draw()

    def _draw(self) -> None:
        share = min(self.done / self.total, 1.0)
        bar = "#" * int(share * 30)
        amount = (f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB" if self.unit == "B"
                  else f"{self.done}/{self.total}")
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {amount}")
        sys.stderr.flush()

    def finish(self, summary: str) -> None:
        """Ends the bar with one line; CI logs see only this line (quiet, greppable)."""
        if self._tty:
            sys.stderr.write("\r\033[K")
        if self._tty or os.environ.get("CI"):
            sys.stderr.write(f"{self.label}: {summary}\n")
            sys.stderr.flush()
