"""``anthropic-ratelimit-*`` response headers over a one-minute window of the emulator clock.

Header names and meanings follow "Rate limits: response headers"
(https://platform.claude.com/docs/en/api/rate-limits): ``-limit`` is the most allowed in any
period, ``-remaining`` what is left before being limited (token counts "rounded to the
nearest thousand"), ``-reset`` the RFC 3339 time the limit is fully replenished; the
``tokens-*`` family shows "the most restrictive limit currently in effect". Only uncached
input counts toward the input limit (cache reads do not), as the same page says for the
current models.

The emulator reports but never enforces these limits: its 429s come from fault injection
(faults.py) or scripts, always with ``retry-after``.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from .clock import Clock

WINDOW_S = 60.0


@dataclass(frozen=True)
class Limits:
    requests: int = 4_000
    input_tokens: int = 2_000_000
    output_tokens: int = 400_000


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _thousands(n: int) -> int:
    return max(0, round(n / 1000) * 1000)


class RateWindow:
    def __init__(self, clock: Clock, limits: Limits | None = None) -> None:
        self._clock = clock
        self.limits = limits or Limits()
        self._events: deque[tuple[float, int, int]] = deque()  # (at, uncached input, output)
        self._lock = threading.Lock()

    def note(self, input_tokens: int, output_tokens: int) -> dict[str, str]:
        """Count one request and return the headers its response carries."""
        with self._lock:
            now = self._clock.now()
            while self._events and self._events[0][0] <= now - WINDOW_S:
                self._events.popleft()
            self._events.append((now, input_tokens, output_tokens))
            used = {
                "requests": len(self._events),
                "input-tokens": sum(e[1] for e in self._events),
                "output-tokens": sum(e[2] for e in self._events),
            }
            last = {
                "requests": now,
                "input-tokens": max((e[0] for e in self._events if e[1]), default=now - WINDOW_S),
                "output-tokens": max((e[0] for e in self._events if e[2]), default=now - WINDOW_S),
            }
        limit = {
            "requests": self.limits.requests,
            "input-tokens": self.limits.input_tokens,
            "output-tokens": self.limits.output_tokens,
        }
        headers: dict[str, str] = {}
        remaining: dict[str, int] = {}
        for name, cap in limit.items():
            left = max(0, cap - used[name])
            remaining[name] = left if name == "requests" else _thousands(left)
            headers[f"anthropic-ratelimit-{name}-limit"] = str(cap)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining[name])
            headers[f"anthropic-ratelimit-{name}-reset"] = _rfc3339(max(now, last[name] + WINDOW_S))
        tightest = min(("input-tokens", "output-tokens"), key=lambda n: remaining[n] / limit[n])
        for part in ("limit", "remaining", "reset"):
            headers[f"anthropic-ratelimit-tokens-{part}"] = headers[f"anthropic-ratelimit-{tightest}-{part}"]
        return headers
