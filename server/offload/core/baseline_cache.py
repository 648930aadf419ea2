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
from typing import Any, NamedTuple

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
    """(digest of the system prompt's text, whether no breakpoint but one on it is in the request),
    or None without a system prompt. The text alone, not its cache marker: the same prompt whether a tier
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


class _Held(NamedTuple):
    """One entry of the baseline's cache: readable by requests sent in [ready, expiry)."""

    ready: float
    expiry: float
    tokens: int = 0  # a system prompt's cached size
    ttl: float = 0.0  # a system prompt's cache lifetime, renewed by each read


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
        self._prefixes: dict[str, _Held] = {}
        self._systems: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        """This cache's clock: take it when a request leaves and pass it to `cost` as `sent_at`."""
        return self._clock()

    def cost(
        self, prices: PriceTable, model: str, params: dict[str, Any], usage: Usage, *, sent_at: float | None = None
    ) -> int:
        """`model`'s price for `usage` as the baseline would have paid it. `sent_at` (this cache's
        clock when the request left): a prefix written by a call that finished after it was not there yet."""
        key = _prefix_key(params)
        now = self._clock()
        sent = now if sent_at is None else sent_at
        if key is not None:
            digest, ttl = key
            digest = f"{model}:{digest}"
            with self._lock:
                was = self._prefixes.get(digest, _Held(now, 0.0))
                held = was.ready <= sent < was.expiry
                self._prefixes[digest] = _Held(was.ready if was.expiry > now else now, now + ttl)
                _trim(self._prefixes, now, self._max)
            written = usage.cache_write_5m + usage.cache_write_1h
            if held and written:
                usage = replace(usage, cache_write_5m=0, cache_write_1h=0, cache_read=usage.cache_read + written)
        system = _system_key(params)
        if system is not None:
            usage = self._system_prompt((f"{model}:{system[0]}", system[1]), key, usage, now, sent)
        return prices.baseline_cost(model, usage)

    def _system_prompt(
        self, system: tuple[str, bool], key: tuple[str, float] | None, usage: Usage, now: float, sent: float
    ) -> Usage:
        digest, only_system = system
        if not only_system:  # a breakpoint further on: its cached tokens are not the system prompt's
            return usage
        # The size is the recording tier's count of the prompt: exact where the tiers count alike (one
        # generation's tokenizer); across tokenizers the credit is off by their difference.
        cached = usage.cache_read + usage.cache_write_5m + usage.cache_write_1h
        with self._lock:
            known = self._systems.get(digest)
            live = known is not None and known.ready <= sent < known.expiry
            if cached and key is not None:
                ready = known.ready if known is not None and known.expiry > now else now
                self._systems[digest] = _Held(ready, now + key[1], cached, key[1])
                _trim(self._systems, now, self._max)
                written = usage.cache_write_5m + usage.cache_write_1h
                if live and written:  # the baseline held it (kept alive by reads of uncached sends)
                    return replace(usage, cache_write_5m=0, cache_write_1h=0, cache_read=cached)
                return usage
            if cached or known is None or not live or usage.input_tokens < known.tokens:
                return usage
            self._systems[digest] = known._replace(expiry=now + known.ttl)  # a read refreshes the entry
        return replace(usage, input_tokens=usage.input_tokens - known.tokens, cache_read=known.tokens)


def _trim(entries: dict[str, _Held], now: float, most: int) -> None:
    """Past `most` entries: drop the expired ones, then the oldest."""
    if len(entries) <= most:
        return
    for stale in [k for k, v in entries.items() if v.expiry <= now]:
        del entries[stale]
    while len(entries) > most:
        del entries[next(iter(entries))]
