"""Cache breakpoints placed from reuse history: the ledger remembers each prefix, the pure rule decides.

`core.cache_placement.choose_ttl` makes the decision, `core.request.build_params` places what
it decided, and this module joins them to the ledger: in one write transaction it reads the
recent uses of the request's prefixes (by digest) and records this use with the TTL placed.
A ledger that can't be written costs the decision its history, never the call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from offload.core.cache_placement import Expect, Reuse, Ttl, choose_ttl, ordered, reuse_from_history
from offload.core.errors import LedgerUnavailableError
from offload.core.request import Breakpoints, Prompt, build_params, prefix_keys, prefix_sizes
from offload.infra.ledger import prefixes

if TYPE_CHECKING:
    from offload.state import AppState

log = logging.getLogger("offload.caching")

# Batches: the docs promise best-effort hits, "typically 30% to 98%"; the low end keeps a
# placement that pays there from losing money anywhere in the range. Most batches end within
# an hour (batch-processing docs), so a batch's requests are taken as spread over one.
BATCH_HIT_RATE = 0.3
BATCH_SPAN_S = 3600.0


def batch_ttl(state: AppState, model: str, prompt: Prompt, requests: int) -> Ttl | None:
    """The TTL for the prefix every request of a batch shares, or None when caching it won't pay."""
    caching = state.policy.caching
    if caching.placement == "never":
        return None
    if caching.placement == "always":
        return caching.batch_ttl
    expect = Expect(reuses=requests - 1, gap_s=BATCH_SPAN_S / max(requests, 1), hit_rate=BATCH_HIT_RATE)
    price = state.prices.price(model)
    return choose_ttl(price.rates_for(prefix_sizes(prompt)[1], batch=True), Reuse(), expect)


async def placed_params(
    state: AppState, model: str, prompt: Prompt, *, max_tokens: int, expect: Expect | None = None
) -> dict[str, Any]:
    """`build_params` with breakpoints where the policy's `caching.placement` puts them."""
    caching = state.policy.caching
    minimum = state.prices.min_cacheable(model)
    if caching.placement == "always":
        return build_params(model, prompt, max_tokens=max_tokens, ttl=caching.ttl, min_cacheable=minimum)
    if caching.placement == "never":
        return build_params(model, prompt, max_tokens=max_tokens, min_cacheable=minimum, breakpoints=Breakpoints())
    system_key, content_key = prefix_keys(model, prompt, minimum)
    keys = [k for k in (system_key, content_key) if k is not None]
    rates = state.prices.price(model).rates_for(prefix_sizes(prompt)[1], batch=False)
    now = state.clock()

    def decide(history: Mapping[str, prefixes.Uses]) -> dict[str, Ttl | None]:
        chosen: dict[str, Ttl | None] = {}
        for key in keys:
            uses = history.get(key, [])
            reuse = reuse_from_history([t for t, _ in uses], now.timestamp(), [ttl for _, ttl in uses])
            chosen[key] = choose_ttl(rates, reuse, expect)
        system, content = ordered(
            chosen.get(system_key) if system_key else None, chosen.get(content_key) if content_key else None
        )
        if system_key:
            chosen[system_key] = system
        if content_key:
            chosen[content_key] = content
        return chosen

    try:
        placed = await prefixes.place(state.ledger, keys, now, decide)
    except LedgerUnavailableError as exc:
        log.warning("cache placement without reuse history: %s", exc)
        placed = decide({})
    breakpoints = Breakpoints(
        system=placed.get(system_key) if system_key else None,
        content=placed.get(content_key) if content_key else None,
    )
    return build_params(model, prompt, max_tokens=max_tokens, min_cacheable=minimum, breakpoints=breakpoints)
