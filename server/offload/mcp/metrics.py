"""`/metrics`: offload's ledger in Prometheus text exposition format (version 0.0.4).

Written by hand rather than with prometheus_client: every figure is recomputed from the ledger
on each scrape (so it is right across all server processes sharing the file, and survives
restarts), and money is printed as the exact decimal of integer picodollars; a client
library's in-process float counters would give neither, for one more dependency.
No prompt text, no keys: labels are model, tier and tool only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from offload.core.cache_gain import cache_net_gain, group_rates
from offload.core.money import usd_json
from offload.core.pricing import PriceTable
from offload.infra.ledger.dashboard import Answers, Group, answers, groups, reading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABELS = ("model", "tier", "tool")
_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")

# name, type, help
_FAMILIES = (
    ("offload_cost_usd_total", "counter", "Exact spend on the Claude API recorded in the ledger, USD."),
    (
        "offload_baseline_usd_total",
        "counter",
        "The same calls sent plainly to the baseline model, USD.",
    ),
    ("offload_tokens_total", "counter", "Tokens billed, by kind."),
    ("offload_calls_total", "counter", "API attempts recorded (escalation rungs and triage included)."),
    ("offload_escalations_total", "counter", "Attempts whose answer failed a check and climbed a tier."),
    ("offload_check_failures_total", "counter", "Final answers that failed their check with no tier left to climb."),
    ("offload_refusals_total", "counter", "Attempts the model refused (stop_reason refusal)."),
    (
        "offload_cache_net_gain_usd",
        "gauge",
        "Cache reads saved minus cache-write premiums, USD; negative is a loss.",
    ),
)


def long_thresholds(prices: PriceTable) -> dict[str, int]:
    out = {}
    for model in prices.models:
        lp = prices.price(model).long_prompt
        if lp is not None:
            out[model] = lp.over_tokens
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(key: tuple[str, ...], extra: str = "") -> str:
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(_LABELS, key, strict=True))
    return "{" + inner + (f',kind="{extra}"' if extra else "") + "}"


def render(groups_: Iterable[Group], prices: PriceTable) -> str:
    sums: dict[str, dict[tuple[str, ...], int]] = defaultdict(lambda: defaultdict(int))
    for g in groups_:
        key: tuple[str, ...] = (g.model, g.tier, g.tool)
        s = sums
        s["offload_cost_usd_total"][key] += g.cost_pusd
        s["offload_baseline_usd_total"][key] += g.baseline_pusd
        s["offload_calls_total"][key] += g.calls
        s["offload_escalations_total"][key] += g.escalations
        s["offload_check_failures_total"][key] += g.check_failures
        s["offload_refusals_total"][key] += g.refusals
        u = g.usage
        counts = (u.input_tokens, u.output_tokens, u.cache_write_5m, u.cache_write_1h, u.cache_read)
        for kind, n in zip(_KINDS, counts, strict=True):
            s["offload_tokens_total"][(*key, kind)] += n
        if prices.has(g.model):  # a model since removed from the table: no rates, so no gain claimed
            rates = group_rates(prices.price(g.model), long_prompt=g.long_prompt, batch=g.batch)
            s["offload_cache_net_gain_usd"][key] += cache_net_gain(rates, u)
    lines = []
    for name, kind, text in _FAMILIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        money = name.endswith(("_usd_total", "_usd"))
        for labelled, value in sorted(sums[name].items()):
            shown = usd_json(value) if money else str(value)
            labels = _labels(labelled[:3], labelled[3] if len(labelled) > 3 else "")
            lines.append(f"{name}{labels} {shown}")
    return "\n".join(lines) + "\n"


def metrics_text(db_path: Path, prices: PriceTable) -> str:
    """The exposition for the ledger at `db_path` (no ledger yet: every family, no samples)."""
    with reading(db_path) as conn:
        found = [] if conn is None else groups(conn, long_thresholds(prices))
        seen = None if conn is None else answers(conn)
    return render(found, prices) + _answers_text(seen)


def _answers_text(a: Answers | None) -> str:
    """Answers returned to hosts by what became of them: savings are read next to these."""
    name = "offload_answers_total"
    lines = [f"# HELP {name} Answers returned to hosts: a check passed, the host redid it (redo_of), or neither."]
    lines.append(f"# TYPE {name} counter")
    if a is None or not a.answers:  # like every family: no samples before the first answer
        return "\n".join(lines) + "\n"
    for state, n in (("checked", a.checked), ("redone", a.redone), ("unchecked", a.unchecked)):
        lines.append(f'{name}{{state="{state}"}} {n}')
    return "\n".join(lines) + "\n"
