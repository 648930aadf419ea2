"""Shared pieces of the benchmarks: result rows, timing statistics, the machine, the table.

Every figure is measured side by side with its baseline in the same process and reported as a
ratio (offload / baseline), so the numbers compare like with like on whatever machine runs them.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from offload.core.money import to_usd


@dataclass(frozen=True)
class Row:
    section: str  # savings | overhead | context | ledger | batch | trim
    metric: str
    offload: str  # the measured figure, with its unit
    baseline: str  # what it is compared against, with its figure
    ratio: str  # offload / baseline, e.g. "0.21x"; "" when no baseline applies
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def ratio(value: float | int | Decimal, base: float | int | Decimal, places: int = 2) -> str:
    if not base:
        return "n/a"
    if isinstance(value, float) or isinstance(base, float):
        return f"{float(value) / float(base):.{places}f}x"
    return f"{Decimal(value) / Decimal(base):.{places}f}x"


def usd(pusd: int) -> str:
    """Exact dollars, to the hundredth of a cent (costs here are sums of exact pusd)."""
    return f"${to_usd(pusd).quantize(Decimal('0.0001'))}"


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a latency someone actually waited)."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100)
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def latency_rows(section: str, metric: str, ours: Sequence[float], base: Sequence[float], base_name: str) -> list[Row]:
    med, base_med = statistics.median(ours), statistics.median(base)
    p99, base_p99 = percentile(ours, 99), percentile(base, 99)
    n = f"n={len(ours)}/{len(base)}"
    return [
        Row(section, f"{metric} median", ms(med), f"{base_name} {ms(base_med)}", ratio(med, base_med), n),
        Row(section, f"{metric} p99", ms(p99), f"{base_name} {ms(base_p99)}", ratio(p99, base_p99), n),
    ]


def machine() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: Iterable[Row]) -> str:
    header = ("section", "metric", "offload", "baseline", "ratio", "note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = (r.section, r.metric, r.offload, r.baseline, r.ratio, r.note)
        lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
    return "\n".join(lines)


def normalize(section: str, raw: Any) -> Row:
    """A colleague's row in whatever shape it comes (Row, mapping or sequence) as a Row."""
    if isinstance(raw, Row):
        return raw
    if isinstance(raw, dict):

        def get(*keys: str) -> str:
            return next((str(raw[k]) for k in keys if k in raw and raw[k] is not None), "")

        return Row(
            get("section") or section,
            get("metric", "name", "what"),
            get("offload", "value", "result"),
            get("baseline", "base"),
            get("ratio"),
            get("note", "notes", "unit"),
        )
    if isinstance(raw, (list, tuple)):
        cells = [str(c) for c in raw] + [""] * 5
        return Row(section, *cells[:5])
    return Row(section, str(raw), "", "", "", "")
