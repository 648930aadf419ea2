"""Read queries behind `/metrics` and `offload dashboard`: SQL only, on a read-only connection.

Synchronous stdlib sqlite3 (like `statusline`): a scrape or a page refresh reads the file the
server processes write, so the figures are right across every process sharing the ledger.
Columns a later migration may add (`project`) are used when present and skipped when not.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from offload.core.errors import InputError
from offload.core.pricing import Usage
from offload.infra.ledger import windows as w
from offload.infra.ledger.statusline import held_pusd, open_ro

_NEVER_LONG = 1 << 62
_PROMPT = "(input_tokens + cache_write_5m + cache_write_1h + cache_read)"
_SUMS = (
    "COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_write_5m), SUM(cache_write_1h), SUM(cache_read),"
    " SUM(cost_pusd), SUM(baseline_pusd)"
)
SERIES_KEYS = {"model": "model", "tier": "tier", "tool": "tool", "session": "session_id", "project": "project"}


@contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection, or None when there is no ledger (yet) at `path`."""
    if not path.exists():
        yield None
        return
    try:
        conn = open_ro(path)
    except sqlite3.Error as exc:  # a directory, no read permission
        raise InputError(f"{path}: cannot read the ledger ({exc})") from None
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'attempts'").fetchone() is None:
            yield None
        else:
            yield conn
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: cannot read the ledger ({exc})") from None
    finally:
        conn.close()


SCAN_ABOVE = 0.2  # share of rows in the window above which a table scan beats the ts index


def since_filter(conn: sqlite3.Connection, since: datetime) -> str:
    """`ts >= ?`, or `+ts >= ?` (no index) when most rows fall in the window.

    Without ANALYZE statistics SQLite always takes the ts index, then fetches every row it
    names from the table: for a 30-day window over a 30-day ledger that is 2-3x slower than
    reading the table straight through. Two counts on the covering index decide.
    """
    inside = conn.execute("SELECT COUNT(*) FROM attempts WHERE ts >= ?", (w.iso(since),)).fetchone()[0]
    total = conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    return "+ts >= ?" if total and inside > SCAN_ABOVE * total else "ts >= ?"


def version(conn: sqlite3.Connection) -> int:
    """Changes whenever an attempt is recorded (rows are only ever added): a cache key."""
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM attempts").fetchone()[0])


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}


@dataclass(frozen=True)
class Group:
    """Attempts sharing model, tier, tool, batch and long-prompt pricing: what rates apply."""

    model: str
    tier: str
    tool: str
    batch: bool
    long_prompt: bool
    calls: int
    usage: Usage
    cost_pusd: int
    baseline_pusd: int
    escalations: int
    check_failures: int
    refusals: int


@dataclass(frozen=True)
class Answers:
    """What became of the answers returned to hosts (the `calls` table of 0010_calls.sql)."""

    answers: int = 0
    checked: int = 0  # a caller's check passed on it and the host did not redo it
    redone: int = 0  # the host judged it wrong (redo_of)

    @property
    def unchecked(self) -> int:
        return self.answers - self.checked - self.redone


def answers(conn: sqlite3.Connection, since: datetime | None = None) -> Answers:
    """Answer counts since `since` (all time when None); zeros on a ledger without the table."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'calls'").fetchone():
        return Answers()
    where, params = ("WHERE ts >= ?", (w.iso(since),)) if since is not None else ("", ())
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(checked AND verdict IS NULL), 0), COALESCE(SUM(verdict IS NOT NULL), 0)"
        f" FROM calls {where}",
        params,
    ).fetchone()
    return Answers(int(row[0]), int(row[1]), int(row[2]))


def groups(conn: sqlite3.Connection, long_over: Mapping[str, int], since: datetime | None = None) -> list[Group]:
    """Every attempt (since `since`) summed per pricing group.

    `long_over` maps a model to its long-prompt threshold, so that linear rates applied to each
    group's sums (cache net gain) are exactly the per-row rates.
    """
    case = " ".join("WHEN ? THEN ?" for _ in long_over)
    threshold = f"(CASE model {case} ELSE {_NEVER_LONG} END)" if long_over else str(_NEVER_LONG)
    params: list[object] = [v for kv in long_over.items() for v in kv]
    where = ""
    if since is not None:
        where, params = f" WHERE {since_filter(conn, since)}", [*params, w.iso(since)]
    rows = conn.execute(
        f"SELECT model, tier, tool, batch, {_PROMPT} > {threshold} AS long, {_SUMS},"
        " SUM(outcome = 'escalated'), SUM(outcome = 'check_failed'), SUM(COALESCE(stop_reason, '') = 'refusal')"
        f" FROM attempts{where} GROUP BY model, tier, tool, batch, long ORDER BY model, tier, tool, batch, long",
        params,
    ).fetchall()
    out = []
    for r in rows:
        calls, inp, outp, w5, w1, rd, cost, base, esc, failed, refused = (int(v or 0) for v in r[5:])
        usage = Usage(inp, outp, w5, w1, rd)
        out.append(
            Group(
                str(r[0]), str(r[1]), str(r[2]), bool(r[3]), bool(r[4]), calls, usage, cost, base, esc, failed, refused
            )
        )
    return out


@dataclass(frozen=True)
class Point:
    bucket: str  # 'YYYY-MM-DD' or 'YYYY-MM-DDTHH'
    key: str
    calls: int
    cost_pusd: int
    baseline_pusd: int


def series(conn: sqlite3.Connection, by: str, since: datetime, *, hourly: bool = False) -> list[Point] | None:
    """Spend per time bucket and `by` key since `since`; None when the ledger has no such column."""
    column = SERIES_KEYS.get(by)
    if column is None:
        raise InputError(f"by={by!r}: expected one of {', '.join(SERIES_KEYS)}")
    if column not in columns(conn, "attempts"):
        return None
    width = 13 if hourly else 10
    rows = conn.execute(
        f"SELECT substr(ts, 1, {width}) AS b, COALESCE({column}, '') AS k, COUNT(*), SUM(cost_pusd), SUM(baseline_pusd)"
        f" FROM attempts WHERE {since_filter(conn, since)} GROUP BY b, k ORDER BY b, k",
        (w.iso(since),),
    ).fetchall()
    return [Point(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


@dataclass(frozen=True)
class SessionSpend:
    session_id: str
    project: str | None
    calls: int
    cost_pusd: int
    baseline_pusd: int
    first_ts: str
    last_ts: str


def sessions(conn: sqlite3.Connection, since: datetime) -> list[SessionSpend]:
    project = "MAX(project)" if "project" in columns(conn, "attempts") else "NULL"
    rows = conn.execute(
        f"SELECT session_id, {project}, COUNT(*), SUM(cost_pusd), SUM(baseline_pusd), MIN(ts), MAX(ts)"
        f" FROM attempts WHERE {since_filter(conn, since)} GROUP BY session_id ORDER BY MAX(ts) DESC",
        (w.iso(since),),
    ).fetchall()
    return [
        SessionSpend(str(r[0]), None if r[1] is None else str(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5], r[6])
        for r in rows
    ]


@dataclass(frozen=True)
class KeptOut:
    session_id: str
    calls: int
    tokens_in: int
    tokens_out: int
    last_ts: str

    @property
    def tokens_kept_out(self) -> int:
        return max(0, self.tokens_in - self.tokens_out)


def kept_out(conn: sqlite3.Connection, since: datetime) -> dict[str, KeptOut]:
    """Per session, what trim_result / summarize_context kept out of the host's context (migration 0040)."""
    if not columns(conn, "context_kept_out"):
        return {}
    rows = conn.execute(
        "SELECT session_id, COUNT(*), SUM(tokens_in), SUM(tokens_out), MAX(ts) FROM context_kept_out"
        " WHERE ts >= ? GROUP BY session_id",
        (w.iso(since),),
    ).fetchall()
    return {str(r[0]): KeptOut(str(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4])) for r in rows}


@dataclass(frozen=True)
class Budget:
    scope: str  # session | daily | monthly
    limit_pusd: int | None
    spent_pusd: int
    reserved_pusd: int
    window_start: str | None
    resets_at: str | None  # None: the session scope ends with its session
    burn: list[tuple[str, int]]  # (bucket, cumulative spend) through the window


def budgets(conn: sqlite3.Connection, now: datetime) -> tuple[str | None, str | None, list[Budget]]:
    """(policy, session, budgets) from the newest policy snapshot; no snapshot: no budgets."""
    snap = conn.execute(
        "SELECT policy, session_id, session_pusd, daily_pusd, monthly_pusd FROM policy_snapshots"
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if snap is None:
        return None, None, []
    policy, session, limits = str(snap[0]), str(snap[1]), snap[2:]
    out = []
    windows = (
        ("session", "session_id = ?", (session,), None, 13),
        ("daily", "ts >= ? AND ts < ?", (w.iso(w.day_start(now)), w.iso(w.next_day(now))), w.day_start(now), 13),
        (
            "monthly",
            "ts >= ? AND ts < ?",
            (w.iso(w.month_start(now)), w.iso(w.next_month(now))),
            w.month_start(now),
            10,
        ),
    )
    for (scope, where, params, start, width), limit in zip(windows, limits, strict=True):
        rows = conn.execute(
            f"SELECT substr(ts, 1, {width}) AS b, SUM(cost_pusd) FROM attempts WHERE {where} GROUP BY b ORDER BY b",
            params,
        ).fetchall()
        burn, running = [], 0
        for b, cost in rows:
            running += int(cost)
            burn.append((str(b), running))
        held = held_pusd(conn, now, *(("session_id = ? AND ", (session,)) if scope == "session" else ()))
        resets = None
        if scope == "daily":
            resets = w.iso(w.next_day(now))
        elif scope == "monthly":
            resets = w.iso(w.next_month(now))
        out.append(
            Budget(
                scope,
                None if limit is None else int(limit),
                running,
                int(held),
                None if start is None else w.iso(start),
                resets,
                burn,
            )
        )
    return policy, session, out


@dataclass(frozen=True)
class BatchRow:
    id: str
    created_at: str
    state: str
    model: str
    requests: int
    settled: int
    succeeded: int
    cost_pusd: int
    sync_pusd: int


def recent_batches(conn: sqlite3.Connection, limit: int = 20) -> list[BatchRow]:
    """Open batches first, then the newest finished ones; [] on a ledger from before batches."""
    if not columns(conn, "batches"):
        return []
    rows = conn.execute(
        "SELECT b.id, b.created_at, b.state, b.model, b.request_count,"
        " COUNT(i.result_type), SUM(i.result_type = 'succeeded'), COALESCE(SUM(i.cost_pusd), 0), b.sync_pusd"
        " FROM batches b LEFT JOIN batch_items i ON i.batch_id = b.id"
        " GROUP BY b.id ORDER BY b.state != 'open', b.created_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [BatchRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), *(int(v or 0) for v in r[4:])) for r in rows]
