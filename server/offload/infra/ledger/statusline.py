"""The figures behind `offload statusline`, read on every Claude Code prompt redraw.

It must start and finish in a few tens of milliseconds, so it uses the stdlib sqlite3 module on
a read-only connection and imports nothing heavy (no anyio, rich, pydantic, mcp, anthropic).
Budget limits come from the newest `policy_snapshots` row the server wrote, not from YAML.
It never fails the prompt: any problem becomes a short line and exit status 0.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from offload.core.money import fmt_usd
from offload.infra.ledger import pg
from offload.infra.ledger import windows as w

# A hold counts while it has not expired and its server instance (0111_server_instances.sql), if it
# has one, holds a lease. Here, stdlib-only, so the statusline and dashboard share it with budgets.
LIVE_HOLD = (
    "expires_at > ? AND (instance_id IS NULL OR instance_id IN (SELECT id FROM server_instances WHERE lease_until > ?))"
)


def held_pusd(
    conn: sqlite3.Connection | pg.SyncConn, now: datetime, where: str = "", params: tuple[object, ...] = ()
) -> int:
    """Money held for calls in flight (`where`: an extra condition ending in AND). Read-only readers
    never migrate: on a ledger from before 0111 holds count by their expiry alone."""
    t = w.iso(now)
    sql = "SELECT COALESCE(SUM(amount_pusd), 0) FROM reservations WHERE " + where
    try:
        row = conn.execute(sql + LIVE_HOLD, (*params, t, t)).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such" not in str(exc):
            raise
        row = conn.execute(sql + "expires_at > ?", (*params, t)).fetchone()
    return int(row[0])


def ro_uri(path: Path) -> str:
    """A read-only SQLite URI for `path`, whatever characters its name holds."""
    # as_uri() percent-encodes '#', '?' and '%': spliced in raw, "a#b/l.db" opened (and created) "a".
    return f"{path.absolute().as_uri()}?mode=ro"


def open_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(ro_uri(path), uri=True, timeout=1.0)
    conn.execute("PRAGMA query_only = ON")
    return conn


def statusline_text(conn: sqlite3.Connection | pg.SyncConn, now: datetime) -> str:
    d0, d1 = w.iso(w.day_start(now)), w.iso(w.next_day(now))
    day_cost, day_base = conn.execute(
        "SELECT COALESCE(SUM(cost_pusd), 0), COALESCE(SUM(baseline_pusd), 0) FROM attempts WHERE ts >= ? AND ts < ?",
        (d0, d1),
    ).fetchone()
    parts = [f"offload {fmt_usd(day_cost)} today"]  # 4 places under $1: small spend stays visible
    snap = conn.execute("SELECT daily_pusd, monthly_pusd FROM policy_snapshots ORDER BY id DESC LIMIT 1").fetchone()
    if snap is not None and (snap[0] is not None or snap[1] is not None):
        held = held_pusd(conn, now)
        lefts = []
        if snap[0] is not None:
            lefts.append(snap[0] - day_cost - held)
        if snap[1] is not None:
            lefts.append(snap[1] - _month_cost(conn, now) - held)
        parts.append(f"{fmt_usd(max(0, min(lefts)), places=2)} left")
    if day_base > 0:
        saved = day_base - day_cost
        parts.append(f"saved {fmt_usd(saved, places=2)} ({saved * 100 // day_base}%)")
    return " · ".join(parts)


def _month_cost(conn: sqlite3.Connection | pg.SyncConn, now: datetime) -> int:
    m0, m1 = w.month_start(now), w.next_month(now)
    if _rolled_up(conn):  # the month's days, not its every attempt
        row = conn.execute(
            "SELECT COALESCE(SUM(cost_pusd), 0) FROM spend_by_day WHERE day >= ? AND day < ?", (w.day(m0), w.day(m1))
        )
    else:
        row = conn.execute(
            "SELECT COALESCE(SUM(cost_pusd), 0) FROM attempts WHERE ts >= ? AND ts < ?", (w.iso(m0), w.iso(m1))
        )
    return int(row.fetchone()[0])


def session_cost(conn: sqlite3.Connection | pg.SyncConn, session_id: str) -> int:
    """What offload spent for one host session (a stdio server's session is the host's id)."""
    table = "spend_rollup" if _rolled_up(conn) else "attempts"
    row = conn.execute(f"SELECT COALESCE(SUM(cost_pusd), 0) FROM {table} WHERE session_id = ?", (session_id,))
    return int(row.fetchone()[0])


def _rolled_up(conn: sqlite3.Connection | pg.SyncConn) -> bool:
    """Whether the ledger has the spend rollups of 0150. A read-only reader never migrates, so a
    ledger last opened by an older server has none; PostgreSQL answers through its sqlite_master view."""
    found = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'spend_by_day'")
    return bool(found.fetchone()[0])


def read_statusline(path: Path | str, now: datetime, *, session_id: str | None = None) -> str:
    """The status line for the ledger at `path`; any problem becomes a short line, never an error.

    With `session_id` (from Claude Code's statusline input) it adds that session's offload spend.
    `path` may be a postgresql:// URL (psycopg is imported only then).
    """
    if pg.is_url(path):
        return _shared_statusline(str(path), now, session_id)
    path = Path(path)
    if not path.exists():
        return "offload: no spend yet"
    try:
        conn = open_ro(path)
        try:
            return _line(conn, now, session_id)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        # A ledger from before its first server run has no tables yet: say so, never fail the prompt.
        return "offload: no spend yet" if "no such table" in str(exc) else f"offload: ledger unreadable ({exc})"


def _line(conn: sqlite3.Connection | pg.SyncConn, now: datetime, session_id: str | None) -> str:
    text = statusline_text(conn, now)
    if session_id:
        spent = session_cost(conn, session_id)
        # Whole cents as cents ("$0.00"); smaller amounts keep 4 places so they stay visible.
        text += f" · this session {fmt_usd(spent, places=2) if spent % 10**10 == 0 else fmt_usd(spent)}"
    return text


def _shared_statusline(url: str, now: datetime, session_id: str | None) -> str:
    try:
        with pg.connect_sync(url, timeout_s=2) as conn:
            return _line(conn, now, session_id)
    except Exception as exc:  # psycopg's errors included: the prompt must never fail
        return f"offload: ledger unreadable ({str(exc).strip()})"
