"""`offload spend`: spend, baseline and savings grouped by day, model, tool or session."""

from __future__ import annotations

import json
from datetime import datetime

from rich.console import Console
from rich.table import Table

from offload.config.settings import Settings
from offload.core.errors import InputError
from offload.core.money import fmt_usd
from offload.infra.ledger import windows as w
from offload.infra.ledger.reports import SpendRow, read_spend, total


def cmd_spend(settings: Settings, *, by: str, since: str | None, as_json: bool, now: datetime | None = None) -> int:
    try:
        start = w.parse_since(since, now or w.utcnow())
    except ValueError as exc:
        raise InputError(str(exc)) from None
    path = settings.db_path
    rows = read_spend(path, by, start)
    tot = total(rows)
    if as_json:
        doc: dict[str, object] = {"db": str(path), "by": by, "since": w.iso(start)}
        doc["rows"] = [r.to_json() for r in rows]
        doc["total"] = tot.to_json()
        print(json.dumps(doc, indent=2))
        return 0
    _print_table(rows, tot, by, start)
    return 0


def _print_table(rows: list[SpendRow], tot: SpendRow, by: str, start: datetime) -> None:
    table = Table(title=f"offload spend by {by} since {start:%Y-%m-%d %H:%M} UTC", show_footer=bool(rows))
    table.add_column(by, footer="total")
    for name, attr, fmt in (
        ("calls", "calls", str),
        ("input+write tok", "input_tokens", "{:,}".format),
        ("cache read", "cache_read", "{:,}".format),
        ("output tok", "output_tokens", "{:,}".format),
        ("cost", "cost_pusd", fmt_usd),
        ("baseline", "baseline_pusd", fmt_usd),
        ("saved", "saved_pusd", fmt_usd),
        ("cache net", "cache_gain_pusd", fmt_usd),
    ):
        table.add_column(name, justify="right", footer=fmt(getattr(tot, attr)))
    table.add_column("saved %", justify="right", footer=f"{tot.saved_pct}%")
    for r in rows:
        table.add_row(
            r.key,
            str(r.calls),
            f"{r.input_tokens:,}",
            f"{r.cache_read:,}",
            f"{r.output_tokens:,}",
            fmt_usd(r.cost_pusd),
            fmt_usd(r.baseline_pusd),
            fmt_usd(r.saved_pusd),
            fmt_usd(r.cache_gain_pusd),
            f"{r.saved_pct}%",
        )
    console = Console(soft_wrap=False)
    if not console.is_terminal:  # piped: rich would squeeze to 80 columns and elide the money
        console = Console(soft_wrap=False, width=150)
    if rows:
        console.print(table)
    else:
        console.print(f"no attempts recorded since {start:%Y-%m-%d %H:%M} UTC")
