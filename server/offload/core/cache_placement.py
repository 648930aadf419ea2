"""Where caching pays: place a breakpoint (5m or 1h) only when expected reads outweigh the write premium.

Per prefix token, a write costs `cache_write_T - input` more than plain input, and every later
read of the entry saves `input - cache_read`. So a TTL pays off when

    expected reads within T  *  (input - cache_read)  >  (cache_write_T - input)

At list prices (write 1.25x / 2x, read 0.1x) that is more than 0.28 reads for 5m (one read within
five minutes pays) and more than 1.11 reads for 1h (two reads are needed, and 1h beats 5m only
when reads come more than five minutes apart). Expected reads come from two sources:

* History: the earlier uses of this exact prefix (from the ledger) and the gaps between them.
  With n earlier uses, the chance that another use follows is taken as (n + 1/4)/(n + 1) (a
  prefix seen once is followed again 5 times in 8; one seen ten times is a loop), and the share
  of gaps within T (smoothed by half a gap each way) as the chance the next one comes in time;
  reads then chain geometrically, each read refreshing the entry. A prefix never seen expects
  nothing from history. The 1/4 was set on bench/bench_caching.py's workloads, simulated over
  30 seeds: on its agent loop n/(n+1) gave at worst 89% (mean 92%) of the hindsight-optimal
  gain and this at worst 92% (mean 94%); it changes nothing for prefixes used two to four times.
* The call's own structure (`Expect`): a fan-out's siblings or a batch's requests reuse the
  prefix by construction, each read honoured with some hit rate (batches are best-effort; a
  missed read writes again and pays the premium once more).

An entry still alive (`Reuse.warm_ttl`) is read whatever the forecast: a read costs less than
plain input.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from offload.core.pricing import Rates

Ttl = Literal["5m", "1h"]
TTL_S: dict[Ttl, float] = {"5m": 300.0, "1h": 3600.0}
Placement = Literal["adaptive", "always", "never"]
NEXT_USE_PRIOR = 0.25  # pseudo-count of "another use follows" (see the module docstring)


@dataclass(frozen=True)
class Reuse:
    """What the ledger knows about one prefix before this call."""

    uses: int = 0  # earlier calls that sent this exact prefix (same model)
    gaps_s: tuple[float, ...] = ()  # seconds between consecutive uses, the last one ending now
    warm_ttl: Ttl | None = None  # a breakpoint placed on it is still alive, with this TTL


@dataclass(frozen=True)
class Expect:
    """Reuse the call's own structure guarantees: `reuses` more requests with this prefix, `gap_s` apart."""

    reuses: int = 0
    gap_s: float = 0.0
    hit_rate: float = 1.0  # the chance each reuse really reads (batches: best-effort)


def reuse_from_history(times_s: Sequence[float], now_s: float, placed: Sequence[Ttl | None] = ()) -> Reuse:
    """`Reuse` from earlier use times (seconds, ascending) and the TTL each placed (None: none)."""
    points = [*times_s, now_s]
    gaps = tuple(max(0.0, b - a) for a, b in itertools.pairwise(points))
    warm: Ttl | None = None
    # An entry lives TTL after the last use that placed a breakpoint on it (a write or a refreshing read).
    for t, ttl in zip(reversed(times_s), reversed(placed), strict=False):
        if ttl is not None:
            if now_s - t < TTL_S[ttl]:
                warm = ttl
            break
    return Reuse(uses=len(times_s), gaps_s=gaps, warm_ttl=warm)


def _history_reads(reuse: Reuse, ttl: Ttl) -> float:
    if reuse.uses == 0 or not reuse.gaps_s:
        return 0.0
    p_next = (reuse.uses + NEXT_USE_PRIOR) / (reuse.uses + 1)
    in_time = (sum(1 for g in reuse.gaps_s if g < TTL_S[ttl]) + 0.5) / (len(reuse.gaps_s) + 1)
    q = p_next * in_time
    return q / (1 - q)


def net_gain(rates: Rates, ttl: Ttl, reuse: Reuse, expect: Expect | None = None) -> float:
    """Expected pusd per prefix token gained by writing this prefix now under `ttl` (negative: a loss)."""
    write = rates.cache_write_5m if ttl == "5m" else rates.cache_write_1h
    premium = write - rates.input
    save = rates.input - rates.cache_read
    best = _history_reads(reuse, ttl) * save - premium
    if expect is not None and expect.reuses > 0:
        hit = expect.hit_rate if expect.gap_s < TTL_S[ttl] else 0.0
        # Each reuse reads with probability `hit`; a miss writes again and pays the premium again.
        structural = expect.reuses * (hit * save - (1 - hit) * premium) - premium
        best = max(best, structural)
    return best


def choose_ttl(rates: Rates, reuse: Reuse, expect: Expect | None = None) -> Ttl | None:
    """The TTL whose write is expected to gain most, or None when no write is expected to pay."""
    if reuse.warm_ttl is not None:
        return reuse.warm_ttl
    best: Ttl | None = None
    best_gain = 0.0
    for ttl in ("5m", "1h"):
        gain = net_gain(rates, ttl, reuse, expect)
        if gain > best_gain:
            best, best_gain = ttl, gain
    return best


def ordered(system: Ttl | None, content: Ttl | None) -> tuple[Ttl | None, Ttl | None]:
    """Breakpoints as the API accepts them: a 1h one may not follow a 5m one.

    The system breakpoint gives way: the content breakpoint's lookback still reads a live
    system-prompt entry, so only the system prompt's own write is skipped.
    """
    if system == "5m" and content == "1h":
        return None, content
    return system, content


__all__ = [
    "TTL_S",
    "Expect",
    "Placement",
    "Reuse",
    "Ttl",
    "choose_ttl",
    "net_gain",
    "ordered",
    "reuse_from_history",
]
