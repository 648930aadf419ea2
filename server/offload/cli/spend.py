"""`offload spend`: spend, baseline and savings grouped by day, model, tool, session, project or user."""

from __future__ import annotations

import csv
import json
import os
import sys
from datetime import datetime

from rich import box
from rich.console import Console
from rich.table import Table

from offload.config.settings import Settings
from offload.core.errors import InputError
from offload.core.money import fmt_usd
from offload.infra.ledger import windows as w
from offload.infra.ledger.reports import SpendRow, read_spend, total

# Below this many columns the full table cannot show whole amounts and names: fewer columns.
NARROW_BELOW = 100
# Piped output has no terminal width; rich would assume 80 and elide the money.
PIPED_WIDTH = 150


def cmd_spend(
    settings: Settings,
    *,
    by: str,
    since: str | None,
    as_json: bool,
    as_csv: bool = False,
    now: datetime | None = None,
) -> int:
    try:
        start = w.parse_since(since, now or w.utcnow())
    except ValueError as exc:
        raise InputError(str(exc)) from None
    path = settings.db_path
    if settings.db_url is None and not path.exists():
        # A wrong path must not read as "nothing spent".
        raise InputError(
            f"no ledger at {path}: nothing recorded there yet, or your server writes elsewhere "
            "(pass the same --db / OFFLOAD_DB it uses)"
        )
    rows = read_spend(settings.ledger_target, by, start)
    where = "the PostgreSQL ledger" if settings.db_url else str(path)
    tot = total(rows)
    if as_json:
        doc: dict[str, object] = {"db": where, "by": by, "since": w.iso(start)}
        doc["rows"] = [r.to_json() for r in rows]
        doc["total"] = tot.to_json()
        print(json.dumps(doc, indent=2))
        return 0
    if as_csv:
        _print_csv(rows, by)
        return 0
    console = _console()
    if not rows:
        console.print(f"no attempts recorded since {start:%Y-%m-%d %H:%M} UTC in {where}")
        return 0
    title = f"offload spend by {by} since {start:%Y-%m-%d %H:%M} UTC"
    if console.width < NARROW_BELOW:
        console.print(_narrow_table(rows, tot, by, title))
        # Quality next to the money, even when the columns for it don't fit.
        q = tot.quality
        console.print(f"answers: {q.checked} checked, {q.redone} redone, {q.unchecked} unchecked (per row: --json)")
    else:
        console.print(_table(rows, tot, by, title))
    return 0


def _console() -> Console:
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return Console(soft_wrap=False, width=int(columns))
    console = Console(soft_wrap=False)
    return console if console.is_terminal else Console(soft_wrap=False, width=PIPED_WIDTH)


def _print_csv(rows: list[SpendRow], by: str) -> None:
    # The JSON fields, one row per group, no total row: a spreadsheet sums for itself.
    fields = ["key", "calls", "input_tokens", "output_tokens", "cache_read_tokens", "cost_usd", "baseline_usd"]
    fields += ["saved_usd", "saved_pct"]
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow([by, *fields[1:]])
    for r in rows:
        doc = r.to_json()
        out.writerow([_cell(r.key), *(doc[f] for f in fields[1:])])


def _cell(key: str) -> str:
    # Keys (OFFLOAD_USER, project paths) come from whoever shares the ledger, and a spreadsheet
    # runs a cell starting with one of these as a formula; a leading ' makes it text (OWASP).
    return "'" + key if key.startswith(("=", "+", "-", "@", "\t", "\r")) else key


def _table(rows: list[SpendRow], tot: SpendRow, by: str, title: str) -> Table:
    table = Table(title=title, show_footer=True)
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
    # Quality next to the money: answers a check passed on, the host redid, or nobody checked.
    for name, attr in (("checked", "checked"), ("redone", "redone"), ("unchecked", "unchecked")):
        table.add_column(name, justify="right", footer=str(getattr(tot.quality, attr)))
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
            str(r.quality.checked),
            str(r.quality.redone),
            str(r.quality.unchecked),
        )
    return table


def _narrow_table(rows: list[SpendRow], tot: SpendRow, by: str, title: str) -> Table:
    """Money and names whole on a small terminal: token counts go (they are in --json and --csv).

    Amounts never wrap or elide; a long key (a project path, a session id) folds onto more lines.
    """
    table = Table(title=title, show_footer=True, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(by, footer="total", overflow="fold")
    table.add_column("calls", justify="right", footer=str(tot.calls), no_wrap=True)
    for name, attr in (("cost", "cost_pusd"), ("baseline", "baseline_pusd"), ("saved", "saved_pusd")):
        table.add_column(name, justify="right", footer=fmt_usd(getattr(tot, attr)), no_wrap=True, min_width=0)
    table.add_column("saved %", justify="right", footer=f"{tot.saved_pct}%", no_wrap=True)
    for r in rows:
        table.add_row(
            r.key,
            str(r.calls),
            fmt_usd(r.cost_pusd),
            fmt_usd(r.baseline_pusd),
            fmt_usd(r.saved_pusd),
            f"{r.saved_pct}%",
        )
    return table
