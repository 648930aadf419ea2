"""The JSON documents behind `offload dashboard`: ledger figures and the host's own bill.

Money leaves here as exact decimal strings (`usd_json`) so the page's table shows what
`offload spend --json` shows; charts parse them to numbers only to draw.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.core.cache_gain import cache_net_gain, group_rates
from offload.core.money import fmt_usd, usd_json
from offload.core.pricing import PriceTable, Usage
from offload.infra.ledger import dashboard as q
from offload.infra.ledger import windows as w
from offload.infra.ledger.reports import pct
from offload.infra.transcripts import (
    FileTurns,
    HostBill,
    SessionBill,
    host_files,
    merge,
    price_turns,
    read_file,
)
from offload.mcp.metrics import long_thresholds

if TYPE_CHECKING:
    import sqlite3

HOURLY_UP_TO_S = 2 * 86400  # periods up to two days are charted by hour, longer ones by day
BY = tuple(q.SERIES_KEYS)
MAX_KEYS = 10  # per breakdown; the rest is folded into OTHER
OTHER = "(other)"


class Memo:
    """Recent answers keyed on (query, period, ledger version): the page polls every few
    seconds, and on a 100k-row ledger each breakdown is a table scan; unchanged data is not
    scanned again. Keys include `version()`, so any new attempt misses."""

    def __init__(self, size: int = 16) -> None:
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


_NO_MEMO = Memo(0)


def money(pusd: int) -> dict[str, str]:
    """Exact (for tables and comparisons) and short (for labels)."""
    return {"usd": usd_json(pusd), "text": fmt_usd(pusd)}


def _pct(part: int, whole: int) -> str:
    # The exact Decimal rounding `offload spend --json` uses: a float turns 0.15 into "0.1".
    return str(pct(part, whole))


def summary(db: Path, prices: PriceTable, since: datetime, now: datetime, memo: Memo = _NO_MEMO) -> dict[str, Any]:
    """Totals, savings with quality counts, cache, budgets and batches for the period."""
    doc: dict[str, Any] = {"db": str(db), "since": w.iso(since), "generated_at": w.iso(now), "ledger": False}
    with q.reading(db) as conn:
        if conn is None:
            return doc
        key = ("groups", w.iso(since), q.version(conn))
        groups = memo.get(key, lambda: q.groups(conn, long_thresholds(prices), since))
        policy, session, budgets = q.budgets(conn, now)
        batches = q.recent_batches(conn)
        answers = q.answers(conn, since)
    doc["ledger"] = True
    usage, cost, base, calls, gain = Usage(), 0, 0, 0, 0
    quality = {"escalated": 0, "check_failed": 0, "refusals": 0}
    for g in groups:
        usage, cost, base, calls = usage + g.usage, cost + g.cost_pusd, base + g.baseline_pusd, calls + g.calls
        quality["escalated"] += g.escalations
        quality["check_failed"] += g.check_failures
        quality["refusals"] += g.refusals
        if prices.has(g.model):
            gain += cache_net_gain(
                group_rates(prices.price(g.model), long_prompt=g.long_prompt, batch=g.batch), g.usage
            )
    doc["totals"] = {
        "calls": calls,
        "cost": money(cost),
        "baseline": money(base),
        "saved": money(base - cost),
        "saved_pct": _pct(base - cost, base),
    }
    # Answers returned to hosts: known good (a check passed), judged wrong (redo_of), or neither.
    quality.update(answers=answers.answers, checked=answers.checked, redone=answers.redone)
    quality["unchecked"] = answers.unchecked
    doc["quality"] = quality
    doc["cache"] = {
        "read_tokens": usage.cache_read,
        "prompt_tokens": usage.prompt_tokens,
        "hit_pct": _pct(usage.cache_read, usage.prompt_tokens),
        "net_gain": money(gain),
    }
    doc["tokens"] = {
        "input": usage.input_tokens,
        "cache_write_5m": usage.cache_write_5m,
        "cache_write_1h": usage.cache_write_1h,
        "cache_read": usage.cache_read,
        "output": usage.output_tokens,
    }
    doc["budgets"] = {
        "policy": policy,
        "session": session,
        "scopes": [
            {
                "scope": b.scope,
                "limit": None if b.limit_pusd is None else money(b.limit_pusd),
                "spent": money(b.spent_pusd),
                "reserved": money(b.reserved_pusd),
                "remaining": None
                if b.limit_pusd is None
                else money(max(0, b.limit_pusd - b.spent_pusd - b.reserved_pusd)),
                "window_start": b.window_start,
                "resets_at": b.resets_at,
                "burn": [[bucket, usd_json(v)] for bucket, v in b.burn],
            }
            for b in budgets
        ],
    }
    doc["batches"] = [
        {
            "id": b.id,
            "created_at": b.created_at,
            "state": b.state,
            "model": b.model,
            "requests": b.requests,
            "settled": b.settled,
            "succeeded": b.succeeded,
            "cost": money(b.cost_pusd),
            "sync_estimate": money(b.sync_pusd),
        }
        for b in batches
    ]
    return doc


def fold(points: list[q.Point], keep: int) -> list[q.Point]:
    """The `keep` costliest keys as they are; every other key summed per bucket as "(other)".

    Two hundred sessions would be two hundred colours and most of the page's weight; the
    totals are unchanged (integer sums), so the table still adds up exactly.
    """
    totals: dict[str, int] = {}
    for p in points:
        totals[p.key] = totals.get(p.key, 0) + p.cost_pusd
    if len(totals) <= keep:
        return points
    kept = set(sorted(totals, key=lambda k: (-totals[k], k))[: keep - 1])
    out: dict[tuple[str, str], list[int]] = {}
    for p in points:
        key = p.key if p.key in kept else OTHER
        acc = out.setdefault((p.bucket, key), [0, 0, 0])
        acc[0] += p.calls
        acc[1] += p.cost_pusd
        acc[2] += p.baseline_pusd
    return [q.Point(b, k, *v) for (b, k), v in sorted(out.items())]


def series(db: Path, since: datetime, now: datetime, memo: Memo = _NO_MEMO, *, by: str = "model") -> dict[str, Any]:
    """Spend per bucket by `by`, as {"by": {by: points}}; null when the ledger lacks that column."""
    hourly = (now - since).total_seconds() <= HOURLY_UP_TO_S
    with q.reading(db) as conn:
        if conn is None:
            return _series(None, since, hourly, by)
        key = ("series", w.iso(since), hourly, by, q.version(conn))
        doc: dict[str, Any] = memo.get(key, lambda: _series(conn, since, hourly, by))
        return doc


def _series(conn: sqlite3.Connection | None, since: datetime, hourly: bool, *keys: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"since": w.iso(since), "bucket": "hour" if hourly else "day", "by": {}}
    for by in keys:
        points = None if conn is None else q.series(conn, by, since, hourly=hourly)
        doc["by"][by] = (
            None
            if points is None
            else [
                {"bucket": p.bucket, "key": p.key, "calls": p.calls, "cost": usd_json(p.cost_pusd)}
                for p in fold(points, MAX_KEYS)
            ]
        )
    return doc


@dataclass
class HostBillCache:
    """The host's bill for the polling page: a file is parsed again only when its size or mtime
    changed (Claude Code appends to the live session's file; finished sessions stay put), and
    the bill is rebuilt only when some file or the period changed."""

    directory: Path
    prices: PriceTable
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _files: dict[Path, tuple[tuple[int, int], FileTurns]] = field(default_factory=dict)
    _key: tuple[Any, ...] | None = None
    _bill: HostBill | None = None

    def get(self, since: datetime) -> HostBill:
        with self._lock:  # one reader at a time: two open tabs must not parse the same files twice
            bill = HostBill(str(self.directory), [])
            files = host_files(self.directory, bill)
            stamps = {}
            for f in files:
                try:
                    st = os.stat(f)
                except OSError:
                    continue  # gone since the listing; read_file would say so if it mattered
                stamps[f] = (st.st_size, st.st_mtime_ns)
            key = (w.iso(since), tuple(stamps.items()), tuple(bill.problems))
            if self._bill is not None and key == self._key:
                return self._bill
            parts, kept = [], {}
            for f in files:
                cached = self._files.get(f)
                if cached is None or f not in stamps or cached[0] != stamps[f]:
                    cached = (stamps.get(f, (-1, -1)), read_file(f))
                kept[f] = cached
                parts.append(cached[1])
            self._files = kept
            price_turns(merge(parts, bill, since), self.prices, bill)
            self._bill, self._key = bill, key
            return bill


def sessions(db: Path, host: HostBillCache, since: datetime, memo: Memo = _NO_MEMO) -> dict[str, Any]:
    """Per session: offload's spend, what its context tools kept out of the host's context, and
    the host's own bill for the same session id."""
    ours: dict[str, q.SessionSpend] = {}
    kept: dict[str, q.KeptOut] = {}
    with q.reading(db) as conn:
        if conn is not None:
            key = ("sessions", w.iso(since), q.version(conn))
            ours = {s.session_id: s for s in memo.get(key, lambda: q.sessions(conn, since))}
            kept = q.kept_out(conn, since)
    bill = host.get(since)
    theirs = {s.session_id: s for s in bill.sessions}
    rows = [_session_row(sid, ours.get(sid), kept.get(sid), theirs.get(sid)) for sid in {*ours, *kept, *theirs}]
    rows.sort(key=lambda r: (str(r["last"]), str(r["session"])), reverse=True)
    return {
        "since": w.iso(since),
        "host": {
            "directory": bill.directory,
            "files": bill.files,
            "turns": bill.turns,
            "cost": money(bill.cost_pusd),
            "duplicates": bill.duplicates,
            "skipped": bill.skipped,
            "unpriced": bill.unpriced,
            "unpriced_extras": bill.unpriced_extras,
            "malformed": bill.malformed,
            "problems": bill.problems,
        },
        "sessions": rows,
    }


def _session_row(
    sid: str, ours: q.SessionSpend | None, kept: q.KeptOut | None, host: SessionBill | None
) -> dict[str, Any]:
    project = (ours.project if ours else None) or (host.project if host else None)
    last = [ours.last_ts if ours else "", kept.last_ts if kept else "", w.iso(host.last_ts) if host else ""]
    return {
        "session": sid,
        "project": project,
        "offload_calls": ours.calls if ours else 0,
        "offload_cost": money(ours.cost_pusd if ours else 0),
        "offload_saved": money(ours.baseline_pusd - ours.cost_pusd if ours else 0),
        "kept_out_tokens": kept.tokens_kept_out if kept else 0,
        "context_calls": kept.calls if kept else 0,
        "host_turns": host.turns if host else 0,
        "host_cost": money(host.cost_pusd if host else 0),
        "host_unpriced_turns": host.unpriced_turns if host else 0,
        "last": max(last),
    }
