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


class BaselineCache:
    """The prefixes the baseline model's cache would hold, with when they would expire."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 4096) -> None:
        self._clock = clock
        self._max = max_entries
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def cost(self, prices: PriceTable, model: str, params: dict[str, Any], usage: Usage) -> int:
        """`model`'s price for `usage`, with writes of a prefix the baseline already holds priced as reads."""
        key = _prefix_key(params)
        if key is not None:
            digest, ttl = key
            now = self._clock()
            with self._lock:
                held = self._expiry.get(digest, 0.0) > now
                self._expiry[digest] = now + ttl
                if len(self._expiry) > self._max:
                    for stale in [k for k, t in self._expiry.items() if t <= now][: len(self._expiry)]:
                        del self._expiry[stale]
                    while len(self._expiry) > self._max:
                        del self._expiry[next(iter(self._expiry))]
            written = usage.cache_write_5m + usage.cache_write_1h
            if held and written:
                usage = replace(usage, cache_write_5m=0, cache_write_1h=0, cache_read=usage.cache_read + written)
        return prices.baseline_cost(model, usage)
