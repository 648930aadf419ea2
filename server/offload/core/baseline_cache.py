"""The baseline of a call: the same request sent to the baseline model, with the same caching.

A host that sent every task to the baseline model itself would keep ONE prompt cache: once it
had sent a shared prefix (a system prompt, a set of files), later requests read it. offload
spreads requests over several models, each with its own cache, so it writes the same prefix
more than once. Pricing those extra writes as baseline writes would credit offload with
savings the host never had; this module remembers which prefixes the baseline would already
hold (in memory, per process, for the cache TTL) and prices their writes as reads there.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from offload.core.pricing import PriceTable, Usage

_TTL_S = {"5m": 300.0, "1h": 3600.0}


def _prefix_key(params: dict[str, Any]) -> tuple[str, float] | None:
    """(digest, ttl seconds) of the request up to its last cache breakpoint, whatever the model."""
    blocks: list[Any] = []
    cut, ttl = 0, "5m"
    system = params.get("system")
    for block in system if isinstance(system, list) else ([system] if system else []):
        blocks.append(block)
        if isinstance(block, dict) and block.get("cache_control"):
            cut, ttl = len(blocks), str(block["cache_control"].get("ttl", "5m"))
    for message in params.get("messages", ()):
        content = message.get("content")
        for block in content if isinstance(content, list) else [content]:
            blocks.append({"role": message.get("role"), "block": block})
            inner = block if isinstance(block, dict) else {}
            if inner.get("cache_control"):
                cut, ttl = len(blocks), str(inner["cache_control"].get("ttl", "5m"))
    if cut == 0:
        return None
    canonical = json.dumps(blocks[:cut], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest(), _TTL_S.get(ttl, 300.0)


def _system_key(params: dict[str, Any]) -> tuple[str, bool] | None:
    """(digest of the system prompt's text, whether the request's only breakpoint is on it), or None
    without a system prompt. The text alone, not its cache marker: the same prompt whether a tier
    placed a breakpoint on it or not."""
    system = params.get("system")
    if not isinstance(system, list) or not system or not isinstance(system[0], dict):
        return None
    first = system[0]
    text = first.get("text")
    if not isinstance(text, str) or not text:
        return None
    marked = [b for b in system if isinstance(b, dict) and b.get("cache_control")]
    for message in params.get("messages", ()):
        content = message.get("content")
        marked += (
            [b for b in content if isinstance(b, dict) and b.get("cache_control")] if isinstance(content, list) else []
        )
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), marked == [first] or not marked


class BaselineCache:
    """The prefixes the baseline model's cache would hold, with when they would expire.

    Two records: every cached prefix (up to a request's last breakpoint), and each system prompt
    with its cached size. The second covers a call that sent its system prompt uncached because its
    own tier had not seen it yet (placement keeps history per model): the baseline model, which had
    every earlier call, would have read it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 4096) -> None:
        self._clock = clock
        self._max = max_entries
        self._expiry: dict[str, float] = {}
        self._systems: dict[str, tuple[int, float, float]] = {}  # digest -> (tokens, ttl s, expiry)
        self._lock = threading.Lock()

    def cost(self, prices: PriceTable, model: str, params: dict[str, Any], usage: Usage) -> int:
        """`model`'s price for `usage` as the baseline would have paid it: writes of a prefix it
        already holds, and a system prompt it holds sent uncached, priced as reads."""
        key = _prefix_key(params)
        now = self._clock()
        if key is not None:
            digest, ttl = key
            with self._lock:
                held = self._expiry.get(digest, 0.0) > now
                self._expiry[digest] = now + ttl
                _trim(self._expiry, now, self._max)
            written = usage.cache_write_5m + usage.cache_write_1h
            if held and written:
                usage = replace(usage, cache_write_5m=0, cache_write_1h=0, cache_read=usage.cache_read + written)
        system = _system_key(params)
        if system is not None:
            usage = self._system_prompt(system, key, usage, now)
        return prices.baseline_cost(model, usage)

    def _system_prompt(
        self, system: tuple[str, bool], key: tuple[str, float] | None, usage: Usage, now: float
    ) -> Usage:
        digest, only_system = system
        if not only_system:  # a breakpoint further on: its cached tokens are not the system prompt's
            return usage
        cached = usage.cache_read + usage.cache_write_5m + usage.cache_write_1h
        with self._lock:
            if cached and key is not None:
                self._systems[digest] = (cached, key[1], now + key[1])
                _trim(self._systems, now, self._max)
                return usage
            known = self._systems.get(digest)
            if cached or known is None or known[2] <= now or usage.input_tokens < known[0]:
                return usage
            tokens, ttl, _ = known
            self._systems[digest] = (tokens, ttl, now + ttl)  # a read refreshes the entry
        return replace(usage, input_tokens=usage.input_tokens - tokens, cache_read=tokens)


def _trim(entries: dict[str, Any], now: float, most: int) -> None:
    """Past `most` entries: drop the expired ones, then the oldest."""
    if len(entries) <= most:
        return
    for stale in [k for k, v in entries.items() if (v[2] if isinstance(v, tuple) else v) <= now]:
        del entries[stale]
    while len(entries) > most:
        del entries[next(iter(entries))]
