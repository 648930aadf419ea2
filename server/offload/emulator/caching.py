"""Prompt cache: breakpoint prefixes keyed by model + canonical prefix bytes.

Accounting follows the API: the longest cached breakpoint prefix is read; the tokens
from there to each later (eligible) breakpoint are written under that breakpoint's TTL;
everything after the last eligible breakpoint is plain input. So
input + creation + read == the request's token count, always.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .clock import Clock
from .prompt import TTL_SECONDS, Prompt


@dataclass
class CacheEntry:
    tokens: int
    ttl: str
    expires_at: float


@dataclass(frozen=True)
class CacheOutcome:
    input_tokens: int
    read: int
    write_5m: int
    write_1h: int

    @property
    def creation(self) -> int:
        return self.write_5m + self.write_1h


class PromptCache:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._prune(self._clock.now())
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _prune(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[key]

    def apply(self, prompt: Prompt) -> CacheOutcome:
        """Read/write the cache for one request and return its input-side usage."""
        total = prompt.total_tokens
        minimum = prompt.model.min_cacheable
        with self._lock:
            now = self._clock.now()
            self._prune(now)
            hit = -1
            for i, bp in enumerate(prompt.breakpoints):
                if bp.key in self._entries:
                    hit = i
            boundary = 0
            read = 0
            if hit >= 0:
                bp = prompt.breakpoints[hit]
                entry = self._entries[bp.key]
                # A read refreshes the entry; a request asking for a longer TTL extends it.
                ttl = entry.ttl if TTL_SECONDS[entry.ttl] >= TTL_SECONDS[bp.ttl] else bp.ttl
                entry.ttl = ttl
                entry.expires_at = now + TTL_SECONDS[ttl]
                read = boundary = bp.prefix_tokens
            written = {"5m": 0, "1h": 0}
            for bp in prompt.breakpoints[hit + 1 :]:
                # Below the model's minimum a breakpoint is silently not cached; its tokens
                # fall to the next eligible breakpoint's write, or to plain input.
                if bp.prefix_tokens < minimum:
                    continue
                written[bp.ttl] += bp.prefix_tokens - boundary
                boundary = bp.prefix_tokens
                self._entries[bp.key] = CacheEntry(bp.prefix_tokens, bp.ttl, now + TTL_SECONDS[bp.ttl])
        return CacheOutcome(input_tokens=total - boundary, read=read, write_5m=written["5m"], write_1h=written["1h"])
