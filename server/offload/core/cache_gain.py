"""Cache net gain: what cache reads saved minus what cache-write premiums cost, in pusd.

Measured against the same request sent without caching (every cached or written token billed
as plain input at the same rates), so a prefix written once and never read shows a loss.
"""

from __future__ import annotations

from offload.core.pricing import ModelPrice, Rates, Usage


def group_rates(price: ModelPrice, *, long_prompt: bool, batch: bool) -> Rates:
    """The rates a row was billed at, given whether its prompt crossed the long-prompt threshold."""
    lp = price.long_prompt
    if long_prompt and lp is not None:
        return lp.batch_rates if batch else lp.rates
    return price.batch_rates if batch else price.rates


def cache_net_gain(rates: Rates, u: Usage) -> int:
    saved = u.cache_read * (rates.input - rates.cache_read)
    premium = u.cache_write_5m * (rates.cache_write_5m - rates.input) + u.cache_write_1h * (
        rates.cache_write_1h - rates.input
    )
    return saved - premium
