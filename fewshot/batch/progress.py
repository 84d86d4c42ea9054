"""Progress of a batch job on stderr: items done, items per second, and the time left."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Progress:
    """Counts items and prints a line at most every ``interval`` seconds (and one at the end).

    Parameters
    ----------
    total : items the run has to do (excluding those a previous run already wrote).
    skipped : items a previous run already wrote (shown, never counted in the rate).
    stream : where the lines go; None is silent.
    interval : seconds between lines.
    """

    def __init__(self, total: int, skipped: int = 0, stream: TextIO | None = sys.stderr, interval: float = 5.0):
        self.total = total
        self.skipped = skipped
        self.stream = stream
        self.interval = interval
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._printed: int | None = None
        self._lock = threading.Lock()

    def set(self, done: int) -> None:
        """Set the items done so far in this run (the Ray engine counts staged rows)."""
        with self._lock:
            self.done = max(self.done, min(done, self.total))
        self._maybe_print()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
        self._maybe_print()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        total = self.total + self.skipped
        done = self.done + self.skipped
        pct = 100.0 * done / total if total else 100.0
        rate = self.rate
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = _duration(left) if left == left else "?"
        skipped = f", {self.skipped:,} from an earlier run" if self.skipped else ""
        return f"batch: {done:,}/{total:,} items ({pct:.1f}%{skipped}), {rate:,.1f} items/s, {eta} left"

    def _maybe_print(self, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if (force and self._printed != self.done) or now - self._last >= self.interval:
            self._last, self._printed = now, self.done
            print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        self._maybe_print(force=True)
