"""Exact prices: model + Usage (+ batch flag) -> integer picodollars.

Pure: `offload.config.pricing` reads the YAML and hands the document to `parse_prices`.
Rates are converted to whole picodollars per token at load time (and refused if a rate, or a
rate times the batch multiplier, is not a whole number of pusd), so every cost below is an
exact integer sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from offload.core.errors import ConfigError, UnpricedModelError
from offload.core.money import PUSD_PER_MTOK_USD

RATE_FIELDS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
_MODEL_FIELDS = {"as_of", "min_cacheable_tokens", "long_prompt", *RATE_FIELDS}
_TOP_FIELDS = {"batch_multiplier", "models", "aliases"}


@dataclass(frozen=True)
class Usage:
    """Token counts of one API call, split the way they are billed."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_write_5m + self.cache_write_1h + self.cache_read

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_write_5m + other.cache_write_5m,
            self.cache_write_1h + other.cache_write_1h,
            self.cache_read + other.cache_read,
        )

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """Read the API's `usage` (an SDK object or a plain mapping); missing/None counts as 0."""

        def get(obj: Any, name: str) -> Any:
            if obj is None:
                return None
            if isinstance(obj, Mapping):
                return obj.get(name)
            return getattr(obj, name, None)

        def num(obj: Any, name: str) -> int:
            return int(get(obj, name) or 0)

        total_write = num(usage, "cache_creation_input_tokens")
        breakdown = get(usage, "cache_creation")
        w1h = num(breakdown, "ephemeral_1h_input_tokens")
        w5m = num(breakdown, "ephemeral_5m_input_tokens")
        # A total without (or beyond) its breakdown is billed as the cheaper, default 5m TTL.
        w5m += max(0, total_write - w5m - w1h)
        return cls(
            input_tokens=num(usage, "input_tokens"),
            output_tokens=num(usage, "output_tokens"),
            cache_write_5m=w5m,
            cache_write_1h=w1h,
            cache_read=num(usage, "cache_read_input_tokens"),
        )


@dataclass(frozen=True)
class Rates:
    """Picodollars per token for each billed kind of token."""

    input: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    output: int

    def charge(self, u: Usage) -> int:
        return (
            u.input_tokens * self.input
            + u.cache_write_5m * self.cache_write_5m
            + u.cache_write_1h * self.cache_write_1h
            + u.cache_read * self.cache_read
            + u.output_tokens * self.output
        )

    @property
    def max_prompt_rate(self) -> int:
        return max(self.input, self.cache_write_5m, self.cache_write_1h, self.cache_read)

    def prompt_rate_for(self, ttls: frozenset[str] | None) -> int:
        """The dearest rate a prompt token can be billed at when the request asks for `ttls`
        (None: unknown, any). A request with no breakpoint writes nothing; a 5m one never pays 1h."""
        if ttls is None:
            return self.max_prompt_rate
        writes = [self.cache_write_5m if t == "5m" else self.cache_write_1h for t in ttls]
        return max(self.input, self.cache_read, *writes)


@dataclass(frozen=True)
class LongPrompt:
    """Above `over_tokens` prompt tokens, every token of the request is billed at `rates`."""

    over_tokens: int
    rates: Rates
    batch_rates: Rates


@dataclass(frozen=True)
class ModelPrice:
    name: str
    as_of: str
    rates: Rates
    batch_rates: Rates
    min_cacheable_tokens: int
    long_prompt: LongPrompt | None = None

    def rates_for(self, prompt_tokens: int, *, batch: bool) -> Rates:
        lp = self.long_prompt
        if lp is not None and prompt_tokens > lp.over_tokens:
            return lp.batch_rates if batch else lp.rates
        return self.batch_rates if batch else self.rates


class PriceTable:
    """A parsed `pricing.yaml` (see `offload.config.pricing.load_prices`)."""

    def __init__(
        self,
        prices: Mapping[str, ModelPrice],
        aliases: Mapping[str, str],
        path: str,
        batch_multiplier: Decimal,
    ) -> None:
        self._prices = dict(prices)
        self._aliases = dict(aliases)
        self.path = path
        self.batch_multiplier = batch_multiplier

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted({*self._prices, *self._aliases}))

    def has(self, model: str) -> bool:
        return model in self._prices or model in self._aliases

    def price(self, model: str) -> ModelPrice:
        found = self._prices.get(self._aliases.get(model, model))
        if found is None:
            raise UnpricedModelError(model, self.path)
        return found

    def cost(self, model: str, usage: Usage, *, batch: bool = False) -> int:
        p = self.price(model)
        return p.rates_for(usage.prompt_tokens, batch=batch).charge(usage)

    def baseline_cost(self, model: str, usage: Usage) -> int:
        """What the same request would cost sent synchronously to `model` with the same caching.

        The host calling the baseline model itself would send the same cache breakpoints, so its
        cache writes and reads are priced as such at `model`'s rates; comparing against an uncached
        call would credit offload with savings the prompt cache makes anyway. A cached prefix
        shorter than `model`'s minimum cacheable length would not be cached there: it is input.
        """
        p = self.price(model)
        rates = p.rates_for(usage.prompt_tokens, batch=False)
        cached = usage.cache_write_5m + usage.cache_write_1h + usage.cache_read
        if cached and cached < p.min_cacheable_tokens:
            usage = Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens)
        return rates.charge(usage)

    def worst_case(
        self, model: str, input_tokens: int, max_tokens: int, *, batch: bool = False, ttls: frozenset[str] | None = None
    ) -> int:
        """An upper bound for a call with at most `input_tokens` prompt tokens: budgets reserve this.
        `ttls`: the cache TTLs the request's breakpoints ask for, when known."""
        p = self.price(model)
        rates = p.rates_for(input_tokens, batch=batch)
        return input_tokens * rates.prompt_rate_for(ttls) + max_tokens * rates.output

    def min_cacheable(self, model: str) -> int:
        return self.price(model).min_cacheable_tokens

    def cache_gain(self, model: str, usage: Usage, *, batch: bool = False) -> int:
        """What caching gained on `usage`: reads saved minus write premiums (negative: it lost).

        The same call with every prompt token as plain input, minus its actual cost, at the same
        rates (batch, long-prompt) — so the output side cancels out.
        """
        plain = Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens)
        return self.cost(model, plain, batch=batch) - self.cost(model, usage, batch=batch)


# --- validation ---------------------------------------------------------------------------


def _fail(where: str, field: str, what: str) -> ConfigError:
    return ConfigError(f"{where}: {field}: {what}")


def _decimal(value: Any, where: str, field: str) -> Decimal:
    if not isinstance(value, str):
        raise _fail(where, field, 'expected a decimal string like "0.50" (quote it so YAML keeps it exact)')
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        raise _fail(where, field, f'expected a decimal string like "0.50", got {value!r}') from None
    if not d.is_finite() or d < 0:
        raise _fail(where, field, f"expected a non-negative decimal, got {value!r}")
    return d


def _whole(value: Decimal, where: str, field: str, what: str) -> int:
    if value != value.to_integral_value():
        raise _fail(where, field, f"{what} is not a whole number of picodollars per token")
    return int(value)


def _rates(raw: Mapping[str, Any], where: str, prefix: str, mult: Decimal) -> tuple[Rates, Rates]:
    plain: dict[str, int] = {}
    batch: dict[str, int] = {}
    for name in RATE_FIELDS:
        field = f"{prefix}.{name}"
        if name not in raw:
            raise _fail(where, field, 'missing; give USD per million tokens as a string like "0.50"')
        usd = _decimal(raw[name], where, field)
        per_token = usd * PUSD_PER_MTOK_USD
        plain[name] = _whole(per_token, where, field, f"{raw[name]} USD/MTok")
        what = f"{raw[name]} USD/MTok x batch_multiplier {mult}"
        batch[name] = _whole(per_token * mult, where, field, what)
    return Rates(**plain), Rates(**batch)


def _positive_int(value: Any, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(where, field, f"expected a positive whole number of tokens, got {value!r}")
    return value


def _mapping(value: Any, where: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, field, f"expected a mapping, got {type(value).__name__}")
    return value


def _unknown(raw: Mapping[str, Any], allowed: set[str], where: str, prefix: str) -> None:
    extra = sorted(str(k) for k in raw if k not in allowed)
    if extra:
        expected = ", ".join(sorted(allowed))
        raise _fail(where, f"{prefix}{extra[0]}", f"unknown field; expected one of {expected}")


def parse_prices(doc: Any, where: str) -> PriceTable:
    """A validated `PriceTable` from a YAML document; every error names `where` and the field."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where}: expected a mapping with batch_multiplier, models and aliases")
    _unknown(doc, _TOP_FIELDS, where, "")
    mult = _decimal(doc.get("batch_multiplier", "1"), where, "batch_multiplier")
    if not 0 < mult <= 1:
        raise _fail(where, "batch_multiplier", f"expected a decimal in (0, 1], got {mult}")
    models = _mapping(doc.get("models"), where, "models")
    if not models:
        raise _fail(where, "models", "no models priced")
    prices: dict[str, ModelPrice] = {}
    for name, raw_any in models.items():
        prefix = f"models.{name}"
        raw = _mapping(raw_any, where, prefix)
        _unknown(raw, _MODEL_FIELDS, where, prefix + ".")
        as_of = raw.get("as_of")
        if not isinstance(as_of, str) or len(as_of) != 10:
            raise _fail(where, f"{prefix}.as_of", f'expected a quoted date like "2026-10-21", got {as_of!r}')
        rates, batch_rates = _rates(raw, where, prefix, mult)
        long_prompt = None
        if raw.get("long_prompt") is not None:
            lp_raw = _mapping(raw["long_prompt"], where, f"{prefix}.long_prompt")
            _unknown(lp_raw, {"over_tokens", *RATE_FIELDS}, where, f"{prefix}.long_prompt.")
            over = _positive_int(lp_raw.get("over_tokens"), where, f"{prefix}.long_prompt.over_tokens")
            lp_rates, lp_batch = _rates(lp_raw, where, f"{prefix}.long_prompt", mult)
            long_prompt = LongPrompt(over, lp_rates, lp_batch)
        min_cache = _positive_int(raw.get("min_cacheable_tokens"), where, f"{prefix}.min_cacheable_tokens")
        prices[str(name)] = ModelPrice(str(name), as_of, rates, batch_rates, min_cache, long_prompt)
    aliases_raw = _mapping(doc.get("aliases") or {}, where, "aliases")
    aliases: dict[str, str] = {}
    for alias, target in aliases_raw.items():
        if target not in prices:
            raise _fail(where, f"aliases.{alias}", f"points at {target!r}, which is not under models")
        if alias in prices:
            raise _fail(where, f"aliases.{alias}", "is also priced under models; keep one")
        aliases[str(alias)] = str(target)
    return PriceTable(prices, aliases, where, mult)
