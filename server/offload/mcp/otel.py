"""OTLP export of the `/metrics` figures (the optional `otel` extra), next to Claude Code's own.

Names mirror Claude Code's (`claude_code.cost.usage`, `claude_code.token.usage` with `type` =
input | output | cacheRead | cacheCreation) so one dashboard can sum both. Values are
observed from the ledger at each export, like `/metrics`, so every process reports the same
shared totals; OTLP carries doubles, so money is exact only to float precision here (the
ledger and `/metrics` keep exact picodollars).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from offload import __version__
from offload.core.cache_gain import cache_net_gain, group_rates
from offload.core.money import to_usd
from offload.core.pricing import PriceTable
from offload.infra.ledger.dashboard import Group, groups, reading
from offload.mcp.metrics import long_thresholds

FRESH_S = 1.0  # one ledger read serves every instrument of one export


class _Snapshot:
    def __init__(self, db: Path, prices: PriceTable) -> None:
        self._db, self._prices, self._lock = db, prices, threading.Lock()
        self._at, self._groups = -FRESH_S, list[Group]()

    def get(self) -> list[Group]:
        with self._lock:
            if time.monotonic() - self._at >= FRESH_S:
                with reading(self._db) as conn:
                    self._groups = [] if conn is None else groups(conn, long_thresholds(self._prices))
                self._at = time.monotonic()
            return self._groups


def _attrs(g: Group) -> dict[str, str]:
    return {"model": g.model, "tier": g.tier, "tool": g.tool}


Values = Callable[[Group], Iterable[tuple[dict[str, str], int]]]


def _count(n: int) -> float | int:
    return n


def _usd(pusd: int) -> float | int:
    # OTLP carries doubles: the exact integer total is converted once, at the edge, never summed as a float.
    return float(to_usd(pusd))


def _summed(
    snap: _Snapshot, value: Values, shown: Callable[[int], float | int] = _count
) -> Callable[..., Iterable[Observation]]:
    def callback(_: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[tuple[str, str], ...], int] = {}  # picodollars or counts: exact integers
        for g in snap.get():
            for extra, v in value(g):
                key = tuple(sorted({**_attrs(g), **extra}.items()))
                totals[key] = totals.get(key, 0) + v
        return [Observation(shown(v), dict(k)) for k, v in totals.items()]

    return callback


def start(db: Path, prices: PriceTable, exporter: OTLPMetricExporter | None = None) -> MeterProvider:
    """A provider exporting periodically (OTEL_METRIC_EXPORT_INTERVAL) until `shutdown()`."""
    snap = _Snapshot(db, prices)
    reader = PeriodicExportingMetricReader(exporter or OTLPMetricExporter())
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "offload", "service.version": __version__}),
    )
    meter = provider.get_meter("offload", __version__)

    def gain(g: Group) -> Iterable[tuple[dict[str, str], int]]:
        if not prices.has(g.model):
            return []
        rates = group_rates(prices.price(g.model), long_prompt=g.long_prompt, batch=g.batch)
        return [({}, cache_net_gain(rates, g.usage))]

    def tokens(g: Group) -> Iterable[tuple[dict[str, str], int]]:
        u = g.usage
        writes = u.cache_write_5m + u.cache_write_1h
        kinds = (("input", u.input_tokens), ("output", u.output_tokens), ("cacheRead", u.cache_read),
                 ("cacheCreation", writes))  # fmt: skip
        return [({"type": k}, n) for k, n in kinds]

    money: list[tuple[str, str, Values]] = [
        ("offload.cost.usage", "Exact spend recorded in the ledger", lambda g: [({}, g.cost_pusd)]),
        (
            "offload.baseline.usage",
            "The same calls sent plainly to the baseline model",
            lambda g: [({}, g.baseline_pusd)],
        ),
    ]
    for name, text, fn in money:
        meter.create_observable_counter(name, [_summed(snap, fn, _usd)], unit="USD", description=text)
    counters: list[tuple[str, str, str, Values]] = [
        ("offload.token.usage", "tokens", "Tokens billed, by type", tokens),
        ("offload.call.count", "{call}", "API attempts recorded", lambda g: [({}, g.calls)]),
        ("offload.escalation.count", "{call}", "Attempts that climbed a tier", lambda g: [({}, g.escalations)]),
        (
            "offload.check_failure.count",
            "{call}",
            "Final answers that failed their check",
            lambda g: [({}, g.check_failures)],
        ),
        ("offload.refusal.count", "{call}", "Attempts the model refused", lambda g: [({}, g.refusals)]),
    ]
    for name, unit, text, fn in counters:
        meter.create_observable_counter(name, [_summed(snap, fn)], unit=unit, description=text)
    meter.create_observable_gauge(
        "offload.cache.net_gain",
        [_summed(snap, gain, _usd)],
        unit="USD",
        description="Cache reads saved minus write premiums",
    )
    return provider
