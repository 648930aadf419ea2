"""Prompt cache: prefixes keyed by model + canonical prefix bytes, at content-block ends.

Accounting follows the API:

* Reads: for each breakpoint the cache is checked at the ends of ``LOOKBACK_BLOCKS`` (20)
  content blocks (tools, system blocks, message blocks), the breakpoint's own block counted as
  the first ("The system checks at most 20 positions per breakpoint, counting the breakpoint
  itself as the first", https://platform.claude.com/docs/en/build-with-claude/prompt-caching;
  a run of consecutive tool_use or tool_result blocks is one position); the longest live
  prefix found over all breakpoints is read. So a
  conversation whose breakpoint moves to the newest message reads what the last turn wrote.
* Writes happen only at breakpoints: the tokens from the read point to each later breakpoint
  are written under that breakpoint's TTL (longer TTLs come first, prompt.py enforces it, so
  this is the API's "1h for B-A, 5m for C-B" rule). A breakpoint whose prefix is below the
  model's minimum cacheable length is silently not cached; its tokens fall to the next
  eligible breakpoint's write, or to plain input.
* Everything after the last written breakpoint is plain ``input_tokens``. So
  input + creation + read == the request's token count (count_tokens), always.
* A read refreshes the entry's TTL; a read through a breakpoint asking for a longer TTL
  extends the entry to it.

``apply(prompt, at=t)`` evaluates a request at an earlier emulator time ``t`` (a batch request
when it ran, not when a client first polled): entries written after ``t`` are invisible
to it and entries alive at ``t`` still count.

Hits are not guaranteed, as on the API:

* Concurrency. "A cache entry only becomes available after the first response begins"
  (https://platform.claude.com/docs/en/build-with-claude/prompt-caching). Requests are
  numbered as they arrive; an entry written while answering is visible only to requests that
  arrived after that response began (``arrived`` > the entry's ``visible_after``), so
  parallel requests started together each miss and each pay the write.
* Batches. "Cache hits are provided on a best-effort basis. Users typically experience cache
  hit rates ranging from 30% to 98%" (https://platform.claude.com/docs/en/build-with-claude/
  batch-processing). The caller draws each batch request's luck from a seeded generator
  (batches.py, ``EmulatorConfig.batch_cache_hit_rate``); an unlucky request reads nothing and
  writes its breakpoints again.

Simplifications: images do not invalidate message-level entries; one cache per emulator (no
per-organisation or per-workspace isolation).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .clock import Clock
from .prompt import TTL_SECONDS, Boundary, Prompt

LOOKBACK_BLOCKS = 20  # block ends checked per breakpoint, its own included


@dataclass
class CacheEntry:
    tokens: int
    ttl: str
    expires_at: float
    written_at: float
    visible_after: int = -1  # requests numbered <= this arrived before the writer's response began

    def live_at(self, t: float) -> bool:
        return self.written_at <= t < self.expires_at

    def readable(self, t: float, arrived: int | None) -> bool:
        return self.live_at(t) and (arrived is None or arrived > self.visible_after)


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

    def _find(self, prompt: Prompt, t: float, arrived: int | None) -> tuple[Boundary, str] | None:
        """The longest readable prefix any breakpoint reaches (itself or by lookback), with its TTL."""
        best: tuple[Boundary, str] | None = None
        for bp in prompt.breakpoints:
            last = prompt.boundaries[bp.block].position - LOOKBACK_BLOCKS + 1
            window = [b for b in prompt.boundaries[: bp.block + 1] if b.position >= last]
            for bound in reversed(window):
                entry = self._entries.get(bound.key)
                if entry is not None and entry.readable(t, arrived):
                    if best is None or bound.prefix_tokens > best[0].prefix_tokens:
                        best = (bound, bp.ttl)
                    break
        return best

    def _write(self, key: str, tokens: int, ttl: str, t: float, horizon: int) -> None:
        entry = self._entries.get(key)
        expires = t + TTL_SECONDS[ttl]
        if entry is None:
            self._entries[key] = CacheEntry(tokens, ttl, expires, t, horizon)
            return
        # An entry this request could not read: one from "later" (a request evaluated after
        # this one), one whose writer had not begun answering, or a batch request's miss.
        entry.written_at = min(entry.written_at, t)
        entry.visible_after = min(entry.visible_after, horizon)
        entry.expires_at = max(entry.expires_at, expires)
        if TTL_SECONDS[ttl] > TTL_SECONDS[entry.ttl]:
            entry.ttl = ttl

    def apply(
        self,
        prompt: Prompt,
        *,
        at: float | None = None,
        arrived: int | None = None,
        horizon: int = -1,
        lucky: bool = True,
    ) -> CacheOutcome:
        """Read/write the cache for one request and return its input-side usage.

        ``arrived``: the request's arrival number (None: it sees every entry written so far).
        ``horizon``: the last arrival number before this request's response begins; what it
        writes is readable only by later arrivals. ``lucky=False``: a best-effort miss.
        """
        total = prompt.total_tokens
        minimum = prompt.model.min_cacheable
        with self._lock:
            now = self._clock.now()
            t = now if at is None else min(at, now)
            self._prune(t)
            boundary = 0
            read = 0
            found = self._find(prompt, t, arrived) if lucky else None
            if found is not None:
                bound, asked = found
                entry = self._entries[bound.key]
                # A read refreshes the entry; a request asking for a longer TTL extends it.
                if TTL_SECONDS[asked] > TTL_SECONDS[entry.ttl]:
                    entry.ttl = asked
                entry.expires_at = max(entry.expires_at, t + TTL_SECONDS[entry.ttl])
                read = boundary = bound.prefix_tokens
            written = {"5m": 0, "1h": 0}
            for bp in prompt.breakpoints:
                # At or before the read point: already cached. Below the model's minimum: not
                # cached; its tokens fall to the next eligible breakpoint or to plain input.
                if bp.prefix_tokens <= boundary or bp.prefix_tokens < minimum:
                    continue
                written[bp.ttl] += bp.prefix_tokens - boundary
                boundary = bp.prefix_tokens
                self._write(bp.key, bp.prefix_tokens, bp.ttl, t, horizon)
        return CacheOutcome(input_tokens=total - boundary, read=read, write_5m=written["5m"], write_1h=written["1h"])
