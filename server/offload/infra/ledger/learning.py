"""Answers and what became of them: verdicts, check outcomes, and the per-family evidence that
learning reads (`tier_stats`) to pick a starting tier.

An unchecked answer nobody judged is weak evidence: it counts as adequate only when it came from
a session whose host has shown it judges answers (it has used `redo_of` at least once); from a
host that never judges, silence says nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from offload.infra.ledger import pg
from offload.infra.ledger import windows as w
from offload.infra.ledger.statusline import open_ro
from offload.policy.models import DIFFICULTIES

if TYPE_CHECKING:
    from offload.infra.ledger.db import Conn, Ledger, WriteConn


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    session_id: str
    family: str
    tier: str
    final_key: str | None
    checked: bool
    redo_of: str | None = None


@dataclass(frozen=True)
class TierStats:
    """Recent evidence for one family on one tier: `adequate` of `known` answers were adequate."""

    adequate: int
    known: int

    @property
    def rate(self) -> float:
        return self.adequate / self.known if self.known else 0.0


def adequacy(checked: bool, failed: str | None) -> bool | None:
    """What one answer shows about its tier: a failed check says inadequate, a passed one
    adequate, an unchecked answer nothing yet (the host's verdict may still come)."""
    if failed is not None:
        return False
    return True if checked else None


def task_of(family: str) -> str:
    """The task of a family (`engine.family_of`): the family without its stated difficulty, by the
    rule the ledger derives `calls.task` with (migration 0180), so the reader asks for what every
    row holds: a label that itself ends like a difficulty ('x@hard') is task x, at every difficulty."""
    label, at, difficulty = family.rpartition("@")
    return label if at and difficulty in DIFFICULTIES else family


async def record_call(
    ledger: Ledger, call: CallRecord, evidence: Sequence[tuple[str, bool | None]], *, now: datetime | None = None
) -> bool:
    """The answer returned, and one evidence row per tier it was tried on, in one transaction.
    False, with nothing written, if an earlier answer already has `call.call_id`."""
    async with ledger.write(inline=True) as conn:
        return await insert_call(conn, call, evidence, w.iso(now or w.utcnow()))


async def insert_call(
    conn: WriteConn, call: CallRecord, evidence: Sequence[tuple[str, bool | None]], ts: str | None = None
) -> bool:
    """`record_call` inside a write transaction the caller holds (the answer's own record, or a
    batch item settling with its answer row)."""
    ts = ts or w.iso(w.utcnow())
    # The answer's length rides on its call row (0160), read from its attempt, written first in
    # this same transaction; NULL while that attempt waits in the journal.
    cur = await conn.execute(
        "INSERT INTO calls (call_id, ts, session_id, family, tier, final_key, checked, redo_of, out_tokens, ended)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
        " (SELECT output_tokens FROM attempts WHERE request_key = ?),"
        " (SELECT CASE WHEN COALESCE(stop_reason, '') != 'max_tokens' THEN 1 ELSE 0 END"
        "  FROM attempts WHERE request_key = ?))"
        " ON CONFLICT (call_id) DO NOTHING",
        (
            call.call_id,
            ts,
            call.session_id,
            call.family,
            call.tier,
            call.final_key,
            int(call.checked),
            call.redo_of,
            call.final_key,
            call.final_key,
        ),
    )
    if cur.rowcount == 0:
        return False
    await conn.executemany(
        "INSERT INTO tier_evidence (ts, session_id, call_id, family, tier, adequate) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (ts, call.session_id, call.call_id, call.family, tier, None if adequate is None else int(adequate))
            for tier, adequate in evidence
        ],
    )
    return True


async def mark_judged(
    ledger: Ledger, call_id: str, verdict: str, *, keep_baseline: bool, reason: str | None = None
) -> bool:
    """The host found `call_id`'s answer wrong: note the verdict, count its tier as inadequate and,
    unless the host is left with this answer (`keep_baseline`), drop its baseline: the redo's answer
    now stands for the one call the host would have made itself. False if the call is unknown."""
    async with ledger.write(inline=True) as conn:
        return await judge_in(conn, call_id, verdict, keep_baseline=keep_baseline, reason=reason)


async def judge_in(
    conn: WriteConn, call_id: str, verdict: str, *, keep_baseline: bool, reason: str | None = None
) -> bool:
    """`mark_judged` inside a write transaction the caller holds (the redo's own record)."""
    rows = list(await conn.execute_fetchall("SELECT tier, final_key FROM calls WHERE call_id = ?", (call_id,)))
    if not rows:
        return False
    tier, final_key = rows[0]
    await conn.execute("UPDATE calls SET verdict = ?, reason = ? WHERE call_id = ?", (verdict, reason, call_id))
    await conn.execute("UPDATE tier_evidence SET adequate = 0 WHERE call_id = ? AND tier = ?", (call_id, str(tier)))
    if not keep_baseline and final_key is not None:
        await conn.execute("UPDATE attempts SET baseline_pusd = 0 WHERE request_key = ?", (str(final_key),))
    return True


_STATS = (
    "SELECT tier, COALESCE(SUM(ok), 0), COUNT(ok) FROM ("
    "  SELECT e.tier, CASE WHEN e.adequate IS NOT NULL THEN e.adequate"
    "   WHEN e.session_id IN (SELECT session_id FROM calls WHERE verdict IS NOT NULL) THEN 1 END AS ok,"
    "   ROW_NUMBER() OVER (PARTITION BY e.tier ORDER BY e.id DESC) AS n"
    "  FROM tier_evidence e WHERE e.family = ?"
    ") AS recent WHERE n <= ? GROUP BY tier"
)


async def tier_stats(conn: Conn, family: str, window: int) -> dict[str, TierStats]:
    """Per tier, the last `window` answers of `family`: how many of the judged ones were adequate."""
    cur = await conn.execute(_STATS, (family, window))
    return {str(r[0]): TierStats(int(r[1]), int(r[2])) for r in await cur.fetchall()}


# The last `window` answers nobody rejected that ended on their own (not cut at max_tokens), of one
# task at any stated difficulty, and of every task: an answer's length follows its task, not its
# difficulty. A task's are read newest first down the calls_task index, which holds the length too
# (0160, 0180), so the read costs the window, not the ledger.
_RECENT = (
    " SELECT c.out_tokens AS out, c.ts AS ts FROM calls c"
    " WHERE {where}c.verdict IS NULL AND c.ended = 1 ORDER BY c.ts DESC LIMIT ?"
)
_LONGEST = "SELECT COUNT(*), COALESCE(MAX(out), 0) FROM ({recent}) AS recent"
_OF_TASK = _LONGEST.format(recent=_RECENT.format(where="c.task = ? AND "))
_JUDGES = "SELECT 1 FROM calls WHERE session_id = ? AND verdict IS NOT NULL"
_SIGNALS = f"SELECT EXISTS ({_JUDGES}), l.* FROM ({_OF_TASK}) l"
_ANY_TASK = _LONGEST.format(recent=_RECENT.format(where=""))


@dataclass(frozen=True)
class Signals:
    """What routing reads before a call: whether this session's host judges, and the recent
    accepted answers (count, longest) of the call's task and (0, 0 when the task has enough of
    its own) of every task."""

    judges: bool
    answers: int
    longest: int
    any_answers: int
    any_longest: int


async def signals(conn: Conn, session_id: str, label: str, window: int, any_window: int, min_samples: int) -> Signals:
    """`any_*` (every task's recent answers) is read only when the task has fewer than `min_samples`
    of its own: the one who needs them is a task with no record yet."""
    judged, answers, longest = (await conn.execute_fetchall(_SIGNALS, (session_id, task_of(label), window)))[0]
    any_answers = any_longest = 0
    if answers < min_samples:
        any_answers, any_longest = (await conn.execute_fetchall(_ANY_TASK, (any_window,)))[0]
    return Signals(bool(judged), int(answers), int(longest), int(any_answers), int(any_longest))


async def typical_output(conn: Conn, model: str, *, recent: int = 200) -> int | None:
    """Mean output tokens of `model`'s recent answers that ended on their own (None: no history)."""
    cur = await conn.execute(
        "SELECT COUNT(*), AVG(output_tokens) FROM (SELECT output_tokens FROM attempts"
        " WHERE model = ? AND outcome = 'ok' AND COALESCE(stop_reason, '') != 'max_tokens'"
        " ORDER BY id DESC LIMIT ?) AS recent",
        (model, recent),
    )
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    return max(1, round(float(row[1])))


def _learned(conn: sqlite3.Connection | pg.SyncConn, window: int) -> dict[str, dict[str, TierStats]]:
    families = [str(r[0]) for r in conn.execute("SELECT DISTINCT family FROM tier_evidence ORDER BY family")]
    out: dict[str, dict[str, TierStats]] = {}
    for family in families:
        rows = conn.execute(_STATS, (family, window)).fetchall()
        out[family] = {str(r[0]): TierStats(int(r[1]), int(r[2])) for r in rows}
    return out


def read_learned(path: Path | str, window: int) -> dict[str, dict[str, TierStats]]:
    """Every family's recent stats, read-only and synchronous, for `offload policy explain`."""
    if pg.is_url(path):
        with pg.connect_sync(str(path)) as shared:
            return _learned(shared, window)
    path = Path(path)
    if not path.exists():
        return {}
    conn = open_ro(path)
    try:
        return _learned(conn, window)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    finally:
        conn.close()


def reset_learned(path: Path | str, family: str | None = None) -> int:
    """Forget the evidence (of one family, or all); calls and their verdicts stay. Rows deleted."""
    if pg.is_url(path):
        with pg.connect_sync(str(path)) as shared, shared.write() as tx:
            if family is None:
                return max(tx.execute("DELETE FROM tier_evidence").rowcount, 0)
            return max(tx.execute("DELETE FROM tier_evidence WHERE family = ?", (family,)).rowcount, 0)
    path = Path(path)
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        if family is None:
            n = conn.execute("DELETE FROM tier_evidence").rowcount
        else:
            n = conn.execute("DELETE FROM tier_evidence WHERE family = ?", (family,)).rowcount
        conn.execute("COMMIT")
        return int(n)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        conn.close()
