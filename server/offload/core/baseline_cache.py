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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, NamedTuple

from offload.core.pricing import PriceTable, Usage

_TTL_S = {"5m": 300.0, "1h": 3600.0}

# The host request a call belongs to: its rungs (a first try, the escalation after it) are one
# request to the baseline model, so a prefix its own first try sent is not "already held" for it.
_request: ContextVar[object | None] = ContextVar("offload_baseline_request", default=None)


@contextmanager
def one_request() -> Iterator[None]:
    """Every call made inside is one request of the host's to the baseline model."""
    token = _request.set(object())
    try:
        yield
    finally:
        _request.reset(token)


def request_owner() -> object:
    """The host request calls made now belong to (a call of its own outside `one_request`)."""
    return _request.get() or object()


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


class Begun:
    """When the API began answering a request, once a client can see it: its success's response
    headers (a stream's first event; a plain call's whole answer). The API serves a prefix to
    requests that arrive once the response writing it has begun (prompt-caching docs: "A cache
    entry only becomes available after the first response begins"), not once it has finished."""

    __slots__ = ("_clock", "at")

    def __init__(self, clock: Callable[[], float], at: float | None = None) -> None:
        self._clock = clock
        self.at = at

    def now(self) -> None:
        if self.at is None:
            self.at = self._clock()

    def before(self, other: Begun) -> bool:
        return self.at is not None and (other.at is None or self.at <= other.at)


_answering: ContextVar[Begun | None] = ContextVar("offload_baseline_answering", default=None)


def answer_began() -> None:
    """The API client saw a success's headers for the request this task is sending."""
    begun = _answering.get()
    if begun is not None:
        begun.now()


class Sent(NamedTuple):
    """A request as it left: when, for which host request, and when its answer began."""

    at: float
    owner: object
    begun: Begun


class _Held(NamedTuple):
    """One entry of the baseline's cache, written by a request of host request `owner`: readable
    by requests of other host requests sent after its answer began and before `expiry`."""

    begun: Begun
    expiry: float
    owner: object

    def readable(self, sent: Sent) -> bool:
        at = self.begun.at
        return at is not None and at < sent.at < self.expiry and self.owner is not sent.owner

    def kept_by(self, sent: Sent, now: float) -> bool:
        """Whether this entry, rather than one `sent` writes, is what the baseline holds after it:
        it is live and began first."""
        return self.expiry > now and self.begun.before(sent.begun)


class _System(NamedTuple):
    """What the baseline model would hold of one system prompt (an entry of `_Held`'s kind)."""

    begun: Begun
    expiry: float
    owner: object
    sent_at: float  # when the request that put it here left (placement counts sends)
    ttl: float
    tokens: int = 0  # its cached size; 0: not known yet (no call has cached exactly it)
    held: bool = True  # False: seen once, sent uncached (the baseline's placement writes at the second)
    # While its size is unknown, uncached sends are priced with `bound` (the fewest input tokens of
    # one: the prompt is no larger) standing in for it; the difference is settled once it is known.
    bound: int = 0
    wrote_as: int = 0  # the sizes the baseline's writes at uncached sends were priced at, summed
    writes: int = 0  # how many
    read_as: int = 0  # the sizes its reads at uncached sends were priced at, summed
    reads: int = 0  # how many
    due: int = 0  # pusd of corrections not yet applied (a credit larger than a call's baseline)

    @classmethod
    def seen(cls, sent: Sent, now: float, bound: int, *, held: bool) -> _System:
        """An uncached send of it (placement's horizon: the default lifetime)."""
        ttl = _TTL_S["5m"]
        return cls(sent.begun, now + ttl, sent.owner, sent.at, ttl, held=held, bound=bound)

    def readable(self, sent: Sent) -> bool:
        return _Held(self.begun, self.expiry, self.owner).readable(sent)


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
        self._systems: dict[str, _System] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        """This cache's clock."""
        return self._clock()

    def sending(self, model: str, params: dict[str, Any], owner: object) -> Sent:
        """A request of host request `owner` leaves now, from this task: its prefix is held for
        requests sent once its answer has begun (`answer_began`, in this task), also before it
        has finished and been priced."""
        now = self._clock()
        begun = Begun(self._clock)
        _answering.set(begun)
        sent = Sent(now, owner, begun)
        key = _prefix_key(params)
        if key is not None:
            digest = f"{model}:{key[0]}"
            with self._lock:
                was = self._prefixes.get(digest)
                if was is None or not was.kept_by(sent, now):
                    self._prefixes[digest] = _Held(begun, now + key[1], owner)
                    _trim(self._prefixes, now, self._max)
        return sent

    def cost(
        self, prices: PriceTable, model: str, params: dict[str, Any], usage: Usage, *, sent: Sent | None = None
    ) -> int:
        """`model`'s price for `usage` as the baseline would have paid it, for the request `sent`
        (from `sending`; None: a request of its own, sent and answered now)."""
        key = _prefix_key(params)
        now = self._clock()
        if sent is None:
            sent = Sent(now, object(), Begun(self._clock, now))
        sent.begun.now()  # answered by now, if the client never said when it began
        if key is not None:
            digest, ttl = key
            digest = f"{model}:{digest}"
            with self._lock:
                was = self._prefixes.get(digest)
                held = was is not None and was.readable(sent)
                if was is not None and was.kept_by(sent, now):
                    self._prefixes[digest] = was._replace(expiry=max(was.expiry, now + ttl))
                else:
                    self._prefixes[digest] = _Held(sent.begun, now + ttl, sent.owner)
                _trim(self._prefixes, now, self._max)
            written = usage.cache_write_5m + usage.cache_write_1h
            if held and written:
                usage = replace(usage, cache_write_5m=0, cache_write_1h=0, cache_read=usage.cache_read + written)
        system = _system_key(params)
        cost = prices.baseline_cost(model, usage)
        if system is None or not system[1]:  # none, or a breakpoint further on: its cached size is not the prompt's
            return cost
        with self._lock:
            return self._system_prompt(prices, model, (f"{model}:{system[0]}", key), usage, cost, (now, sent))

    def _system_prompt(
        self,
        prices: PriceTable,
        model: str,
        keys: tuple[str, tuple[str, float] | None],
        usage: Usage,
        cost: int,
        when: tuple[float, Sent],
    ) -> int:
        """`cost`, as the baseline would have paid the system prompt (under the lock).

        The baseline model sees every call of a family, so its placement writes a system prompt at
        the family's second send, where each tier sends it uncached until its own second; and it
        reads it from then on, where a tier that has not cached it yet sends it uncached. Until a
        call caches exactly the prompt, its size is bounded by the fewest input tokens of a send;
        calls priced with that bound are settled with the first call that tells the size."""
        digest, key = keys
        now, sent = when
        # The size is the recording tier's count of the prompt: exact where the tiers count alike (one
        # generation's tokenizer); across tokenizers the credit is off by their difference.
        cached = usage.cache_read + usage.cache_write_5m + usage.cache_write_1h
        known = self._systems.get(digest)
        if known is not None and known.expiry <= now:
            known = None
        readable = known is not None and known.held and known.readable(sent)
        if cached:
            if key is None:
                return cost
            if readable and (usage.cache_write_5m or usage.cache_write_1h):  # the baseline held it
                as_read = replace(usage, cache_write_5m=0, cache_write_1h=0, cache_read=cached)
                cost = prices.baseline_cost(model, as_read)
            first = known if known is not None and known.held and known.begun.before(sent.begun) else None
            entry = first or _System(sent.begun, now, sent.owner, sent.at, key[1])
            due = entry.due + _settlement(prices, model, entry, cached)
            entry = entry._replace(expiry=now + key[1], tokens=cached, ttl=key[1])
            entry = entry._replace(wrote_as=0, writes=0, read_as=0, reads=0)  # settled
            return self._settle(digest, entry, cost, due, now)
        if known is None:  # a first send: the baseline sends it uncached too
            self._systems[digest] = _System.seen(sent, now, usage.input_tokens, held=False)
            _trim(self._systems, now, self._max)
            return cost
        size = known.tokens or None
        bound = min(usage.input_tokens, known.bound or usage.input_tokens)
        if known.owner is sent.owner or (not known.held and known.sent_at >= sent.at):
            return cost
        if not known.held:  # its second send: the baseline's placement writes it here
            entry = _System.seen(sent, now, bound, held=True)
            self._systems[digest] = entry._replace(wrote_as=bound, writes=1)
            return cost + _write_premium(prices, model, bound)
        if not readable:  # sent before the write's answer began: the baseline writes it again
            if size is None:
                self._systems[digest] = known._replace(
                    bound=bound, wrote_as=known.wrote_as + bound, writes=known.writes + 1
                )
            return cost + _write_premium(prices, model, size or bound)
        entry = known._replace(expiry=now + known.ttl, bound=bound)  # a read refreshes the entry
        as_size = size or bound
        if usage.input_tokens < as_size or as_size < prices.price(model).min_cacheable_tokens:
            self._systems[digest] = entry
            return cost
        if size is None:
            entry = entry._replace(read_as=known.read_as + bound, reads=known.reads + 1)
        as_read = replace(usage, input_tokens=usage.input_tokens - as_size, cache_read=as_size)
        return self._settle(digest, entry, prices.baseline_cost(model, as_read), entry.due, now)

    def _settle(self, digest: str, entry: _System, cost: int, due: int, now: float) -> int:
        """`cost` with the corrections `due` applied, as far as it goes (never below 0)."""
        settled = max(0, cost + due)
        self._systems[digest] = entry._replace(due=due - (settled - cost))
        _trim(self._systems, now, self._max)
        return settled


def _write_premium(prices: PriceTable, model: str, tokens: int) -> int:
    """What writing `tokens` to the cache costs `model` over sending them as input (0 below its
    minimum cacheable length: it would not have cached them)."""
    if tokens < prices.price(model).min_cacheable_tokens:
        return 0
    rates = prices.price(model).rates_for(tokens, batch=False)
    return rates.charge(Usage(cache_write_5m=tokens)) - rates.charge(Usage(input_tokens=tokens))


def _settlement(prices: PriceTable, model: str, entry: _System, size: int) -> int:
    """What the calls priced with a bound for the prompt's size owe, now that it is `size`: each
    write and read at an uncached send was priced at its bound where `size` was written or read
    (nothing, below the model's minimum: then it was all input)."""
    cacheable = size >= prices.price(model).min_cacheable_tokens
    rates = prices.price(model).rates_for(size, batch=False)

    def gap(tokens: int, *, write: bool) -> int:
        # `tokens` (signed) more priced as written (or read) rather than as input.
        n = abs(tokens)
        as_cached = Usage(cache_write_5m=n) if write else Usage(cache_read=n)
        diff = rates.charge(as_cached) - rates.charge(Usage(input_tokens=n))
        return diff if tokens >= 0 else -diff

    due = gap(entry.writes * size * cacheable - entry.wrote_as, write=True) if entry.writes else 0
    return due + (gap(entry.reads * size * cacheable - entry.read_as, write=False) if entry.reads else 0)


def _trim(entries: dict[str, Any], now: float, most: int) -> None:
    """Past `most` entries: drop the expired ones, then the oldest."""
    if len(entries) <= most:
        return
    for stale in [k for k, v in entries.items() if v.expiry <= now]:
        del entries[stale]
    while len(entries) > most:
        del entries[next(iter(entries))]
