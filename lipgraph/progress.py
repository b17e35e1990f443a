"""Progress on stderr for analyses that run longer than a couple of seconds."""
from __future__ import annotations

import sys
import time


class Progress:
    """Call with a message; prints it (rate-limited) once ``after`` seconds have passed."""

    def __init__(self, enabled: bool = True, after: float = 2.0, every: float = 1.0, stream=None):
        self.enabled, self.after, self.every = enabled, after, every
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self._last = -float("inf")

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        elapsed = now - self.start
        if self.enabled and elapsed >= self.after and now - self._last >= self.every:
            self._last = now
            print(f"lipgraph: [{elapsed:5.1f}s] {message}", file=self.stream, flush=True)
