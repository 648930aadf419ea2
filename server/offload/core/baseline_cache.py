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
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from offload.core.cache_placement import TTL_S, Ttl, choose_ttl, reuse_from_history
from offload.core.pricing import PriceTable, Rates, Usage
from offload.core.tokens import approx_tokens, upper_bound_tokens

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
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest(), TTL_S["1h"] if ttl == "1h" else TTL_S["5m"]


def _system_key(params: dict[str, Any]) -> tuple[str, bool, int, int] | None:
    """(digest of the system prompt's text, whether no breakpoint but one on it is in the request,
    an upper bound of its tokens, their likely number), or None without a system prompt. The text
    alone, not its cache marker: the same prompt whether a tier placed a breakpoint on it or not."""
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
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digest, marked == [first] or not marked, upper_bound_tokens(text), approx_tokens(text)


class Begun:
    """A request in flight: when it left (its latest try: the SDK retries a failed one) and when
    the API began answering it, once a client can see it: its success's response headers (a
    stream's first event; a plain call's whole answer). The API serves a prefix to requests that
    arrive once the response writing it has begun (prompt-caching docs: "A cache entry only
    becomes available after the first response begins"), not once it has finished."""

    __slots__ = ("_clock", "at", "left")

    def __init__(self, clock: Callable[[], float], left: float, at: float | None = None) -> None:
        self._clock = clock
        self.left = left
        self.at = at

    def now(self) -> None:
        if self.at is None:
            self.at = self._clock()

    def before(self, other: Begun) -> bool:
        return self.at is not None and (other.at is None or self.at <= other.at)


_answering: ContextVar[Begun | None] = ContextVar("offload_baseline_answering", default=None)


def request_left() -> None:
    """The API client is sending (again) the request this task is making."""
    begun = _answering.get()
    if begun is not None and begun.at is None:
        begun.left = begun._clock()


def answer_began() -> None:
    """The API client saw a success's headers for the request this task is sending."""
    begun = _answering.get()
    if begun is not None:
        begun.now()


class Sent(NamedTuple):
    """A request as it left: for which host request, and when it left and its answer began."""

    owner: object
    begun: Begun
    # The request's prefix and system prompt keys, taken once as it left (hashing a large prompt
    # twice per call is work on every call's path); None where `cost` takes them itself.
    keys: tuple[tuple[str, float] | None, tuple[str, bool, int, int] | None] | None = None


class _Held(NamedTuple):
    """One entry of the baseline's cache, written by a request of host request `owner`: readable
    by requests of other host requests sent after its answer began and before `expiry`."""

    begun: Begun
    expiry: float
    owner: object

    def readable(self, sent: Sent) -> bool:
        at = self.begun.at
        return at is not None and at < sent.begun.left < self.expiry and self.owner is not sent.owner

    def kept_by(self, sent: Sent, now: float) -> bool:
        """Whether this entry, rather than one `sent` writes, is what the baseline holds after it:
        it is live and began first."""
        return self.expiry > now and self.begun.before(sent.begun)


@dataclass(eq=False)
class _Send:
    """One host request's send of a system prompt (its first, for a request that climbed)."""

    owner: object
    begun: Begun
    ttl: Ttl | None  # the breakpoint its own tier put on the prompt (None: sent uncached)
    always: bool = False  # placed by `caching.placement: always`: the baseline's would place the same
    decided: bool = False
    placed: Ttl | None = None  # the breakpoint the baseline model's placement would have put there


@dataclass(eq=False)
class _Family:
    """One system prompt as the baseline model would have cached it: every recent send of it, by
    any tier, and what is known of its size."""

    sends: list[_Send] = field(default_factory=list)
    tokens: int = 0  # its cached size; 0: not known yet (no call has cached exactly it)
    # Until then uncached sends are priced at an upper bound of it (`_system_prompt`), settled once
    # a call caches exactly the prompt.
    bound: int = 0
    # Per way it was priced at a bound (a `Usage` field: cache_write_5m, cache_write_1h, cache_read):
    # (the bounds summed, how many sends).
    at_bound: dict[str, tuple[int, int]] = field(default_factory=dict)
    due: int = 0  # pusd of settlements not yet applied (a credit larger than a call's baseline)
    expiry: float = 0.0  # when it is forgotten (`_trim`)
    counting: bool = False  # its size has been asked of the API (`to_count`)

    def send_of(self, owner: object) -> _Send | None:
        return next((s for s in self.sends if s.owner is owner), None)

    def placed(self, mine: _Send, rates: Rates) -> Ttl | None:
        """The breakpoint the baseline model's placement would have put on the prompt in `mine`:
        offload's own rule (core/cache_placement.py) on the sends of every tier before it. (A
        tier's `always` placement marks every send: the baseline's would too.)"""
        for send in sorted(self.sends, key=lambda x: x.begun.left):
            if send.decided:
                continue
            earlier = [s for s in self.sends if s.decided and s.begun.left < send.begun.left]
            earlier.sort(key=lambda x: x.begun.left)
            reuse = reuse_from_history([s.begun.left for s in earlier], send.begun.left, [s.placed for s in earlier])
            send.placed = send.ttl if send.always else choose_ttl(rates, reuse) or send.ttl
            send.decided = True
            if send is mine:
                break
        return mine.placed

    def kind(self, mine: _Send, rates: Rates) -> tuple[str, Ttl | None]:
        """How the baseline model would have sent the prompt in `mine` ("input", "write" or
        "read"), and under which TTL: a read where an earlier send's breakpoint holds it, its
        answer begun before this one left and within its lifetime."""
        ttl = self.placed(mine, rates)
        if ttl is None:
            return "input", None
        for s in self.sends:
            began = s.begun.at
            if s is mine or s.placed is None or began is None:
                continue
            if began < mine.begun.left < began + TTL_S[s.placed]:
                return "read", ttl
        return "write", ttl

    def settle(self, prices: PriceTable, model: str, size: int) -> None:
        """The size is known: what the sends priced at an upper bound of it owe goes into `due`:
        each was written or read at its bound where `size` was (nothing, below the minimum), and
        the rest of the bound was input."""
        cacheable = size >= prices.price(model).min_cacheable_tokens
        rates = prices.price(model).rates_for(size, batch=False)
        for kind, (bounds, sends) in self.at_bound.items():
            more = sends * size * cacheable - bounds  # signed: tokens priced as `kind`, not input
            gap = rates.charge(Usage(**{kind: abs(more)})) - rates.charge(Usage(input_tokens=abs(more)))
            self.due += gap if more >= 0 else -gap
        self.tokens, self.at_bound = size, {}

    def apply_due(self, cost: int) -> int:
        """`cost` with what is due applied, as far as it goes (never below 0)."""
        settled = max(0, cost + self.due)
        self.due -= settled - cost
        return settled


class BaselineCache:
    """What the baseline model's cache would hold, as requests are sent and priced.

    Two records: every cached prefix (up to a request's last breakpoint), and each system prompt
    with the recent sends of it by every tier. The second prices a system prompt as the baseline
    model would have sent it, having had every call: placement keeps history per model, so each
    tier sends a family's system prompt uncached until its own second call, and the baseline
    model would have written it at the family's second call and read it from then on.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 4096) -> None:
        self._clock = clock
        self._max = max_entries
        self._prefixes: dict[str, _Held] = {}
        self._systems: dict[str, _Family] = {}
        self._lock = threading.Lock()

    def sending(self, model: str, params: dict[str, Any], owner: object, *, always: bool = False) -> Sent:
        """A request of host request `owner` leaves now, from this task: its prefix is held for
        requests sent once its answer has begun (`answer_began`, in this task), also before it
        has finished and been priced. `always`: the policy places breakpoints whatever the history."""
        now = self._clock()
        begun = Begun(self._clock, now)
        _answering.set(begun)
        key, system = _prefix_key(params), _system_key(params)
        sent = Sent(owner, begun, (key, system))
        with self._lock:
            if key is not None:
                digest = f"{model}:{key[0]}"
                was = self._prefixes.get(digest)
                if was is None or not was.kept_by(sent, now):
                    self._prefixes[digest] = _Held(begun, now + key[1], owner)
                    _trim(self._prefixes, now, self._max)
            if system is not None and system[1]:
                self._note_send(f"{model}:{system[0]}", sent, _ttl_of(key), now, always=always)
        return sent

    def _note_send(self, digest: str, sent: Sent, ttl: Ttl | None, now: float, *, always: bool = False) -> _Family:
        family = self._systems.get(digest)
        if family is None or family.expiry <= now:
            family = self._systems[digest] = _Family()
            _trim(self._systems, now, self._max)
        if family.send_of(sent.owner) is None:
            # No send older than the longest cache lifetime matters.
            family.sends = [s for s in family.sends[-255:] if s.begun.left > now - TTL_S["1h"]]
            family.sends.append(_Send(sent.owner, sent.begun, ttl, always))
        family.expiry = now + TTL_S["1h"]
        return family

    def to_count(self, model: str, sent: Sent) -> str | None:
        """The family whose system prompt `sent` carries, when its size is worth asking the API's
        free count_tokens once: not known yet, sent uncached, and sent before by another request
        (from its second send on the baseline may hold it). Asked once per prompt."""
        key, system = sent.keys or (None, None)
        if system is None or not system[1] or key is not None:
            return None
        digest = f"{model}:{system[0]}"
        with self._lock:
            family = self._systems.get(digest)
            if family is None or family.tokens or family.counting or len(family.sends) < 2:
                return None
            family.counting = True
        return digest

    def counted(self, prices: PriceTable, model: str, digest: str, tokens: int) -> None:
        """The API counted the family's system prompt at `tokens`: what was priced at a bound of
        it is settled (with the next call that prices it)."""
        with self._lock:
            family = self._systems.get(digest)
            if family is not None and not family.tokens and tokens > 0:
                family.settle(prices, model, tokens)

    def cost(
        self, prices: PriceTable, model: str, params: dict[str, Any], usage: Usage, *, sent: Sent | None = None
    ) -> int:
        """`model`'s price for `usage` as the baseline would have paid it, for the request `sent`
        (from `sending`; None: a request of its own, sent and answered now)."""
        now = self._clock()
        if sent is None:
            sent = Sent(object(), Begun(self._clock, now, now))
        sent.begun.now()  # answered by now, if the client never said when it began
        key, system = sent.keys if sent.keys is not None else (_prefix_key(params), _system_key(params))
        if system is not None and system[1]:  # no breakpoint but one on the system prompt
            with self._lock:
                family = self._note_send(f"{model}:{system[0]}", sent, _ttl_of(key), now)
                return self._system_prompt(prices, model, family, usage, (sent, system[2], system[3]))
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
        return prices.baseline_cost(model, usage)

    def _system_prompt(
        self, prices: PriceTable, model: str, family: _Family, usage: Usage, request: tuple[Sent, int, int]
    ) -> int:
        """The price of `usage` with its system prompt sent as the baseline model would have (under
        the lock). The size is the recording tier's count of the prompt: exact where the tiers count
        alike (one generation's tokenizer); across tokenizers off by their difference."""
        sent, upper, approx = request
        mine = family.send_of(sent.owner)
        assert mine is not None  # noted by the caller
        cached = usage.cache_read + usage.cache_write_5m + usage.cache_write_1h
        if cached:
            family.settle(prices, model, cached)
            size = likely = cached
        else:
            family.bound = min(usage.input_tokens, family.bound or usage.input_tokens)
            # Not known yet: priced at an upper bound (no more tokens than an uncached send's input
            # nor than its bytes), so settling it adds to later baselines rather than taking away
            # more than they hold; whether the baseline caches it at all is judged on the likely
            # size (about four characters a token): a prompt never cached by any tier is never settled.
            size = family.tokens or min(family.bound, upper)
            likely = family.tokens or min(family.bound, approx)
        price = prices.price(model)
        if usage.input_tokens + cached < size or likely < price.min_cacheable_tokens:
            mine.decided, mine.placed = True, None  # the baseline would not have cached it either
            return family.apply_due(prices.baseline_cost(model, usage))
        kind, ttl = family.kind(mine, price.rates_for(size, batch=False))
        field_ = {"input": "input_tokens", "read": "cache_read"}.get(kind) or f"cache_write_{ttl}"
        as_sent = Usage(**{field_: size})
        if not family.tokens and kind != "input":
            bounds, sends = family.at_bound.get(field_, (0, 0))
            family.at_bound[field_] = (bounds + size, sends + 1)
        rest = usage.input_tokens + cached - size
        baseline = replace(as_sent, input_tokens=as_sent.input_tokens + rest, output_tokens=usage.output_tokens)
        return family.apply_due(prices.baseline_cost(model, baseline))


def _ttl_of(key: tuple[str, float] | None) -> Ttl | None:
    if key is None:
        return None
    return "1h" if key[1] >= TTL_S["1h"] else "5m"


def _trim(entries: dict[str, Any], now: float, most: int) -> None:
    """Past `most` entries: drop the expired ones, then the oldest."""
    if len(entries) <= most:
        return
    for stale in [k for k, v in entries.items() if v.expiry <= now]:
        del entries[stale]
    while len(entries) > most:
        del entries[next(iter(entries))]
