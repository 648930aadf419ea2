"""Injectable clock: real time plus an offset tests can advance.

Cache TTLs, batch processing delay and batch expiry are all measured on this clock, so a
test can jump an hour ahead without sleeping while small real delays still elapse.
"""

from __future__ import annotations

import threading
import time


class Clock:
    def __init__(self, start: float | None = None, *, frozen: bool = False) -> None:
        self._lock = threading.Lock()
        self._frozen = frozen
        base = time.time() if start is None else start
        # Keep the offset relative to the monotonic clock so wall-clock jumps on the host
        # never move emulated time backwards.
        self._offset = base - time.monotonic()
        self._frozen_at = base

    def now(self) -> float:
        """Seconds since the Unix epoch, on the emulator's timeline."""
        with self._lock:
            if self._frozen:
                return self._frozen_at
            return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        with self._lock:
            self._offset += seconds
            self._frozen_at += seconds

    def freeze(self) -> None:
        with self._lock:
            self._frozen_at = time.monotonic() + self._offset
            self._frozen = True

    def unfreeze(self) -> None:
        with self._lock:
            self._offset = self._frozen_at - time.monotonic()
            self._frozen = False
