"""All batch SQL: the local record of a batch, its API parts, items, leases and settlement.

Exactly-once settlement: an item's result is written with `... WHERE result_type IS NULL` in the
same IMMEDIATE transaction as its attempt row (idempotent on `batch:<api id>:<custom_id>`) and
the matching cut of the batch's reservation, so a collector killed at any point, or two
collectors racing, can neither count an item twice nor release its hold twice.

A batch's reservation is detached from the submitting process (pid 0, host BATCH_HOST): the
pid-liveness purge in budgets.py only frees holds of this host's dead pids, so the hold
survives restarts and lasts until the batch settles or the hold expires (RESERVE_TTL_S).
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from offload.core.errors import InputError
from offload.infra.ledger import windows as w
from offload.infra.ledger.records import Attempt, _insert
from offload.infra.ledger.statusline import open_ro, ro_uri
from offload.infra.processes import pid_alive

if TYPE_CHECKING:
    from offload.infra.ledger.db import Conn, Ledger

BATCH_HOST = "batch"  # reservations.host of holds owned by a batch, not by a process
RESERVE_TTL_S = 25 * 3600  # the API expires a batch after 24 h; results may land just after
OPEN_PART_STATES = ("pending", "submitting", "in_progress", "ended", "unknown")


def new_batch_id() -> str:
    return "b_" + secrets.token_hex(6)


def lease_owner() -> str:
    """Who holds a lease: host and pid (for liveness checks) plus a token unique to this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


_TOKEN = secrets.token_hex(4)


@dataclass(frozen=True)
class NewBatch:
    id: str
    session_id: str
    policy: str
    tier: str
    model: str
    baseline_model: str
    request_count: int
    worst_pusd: int
    typical_pusd: int
    sync_pusd: int
    shared: str
    retry_of: str | None = None
    owner: str | None = None  # the HTTP principal that made it (None: local)


# Reads for a caller pass its owner; the collector and the CLI, which act for everyone, pass ANY.
ANY: Any = object()


def _owned(owner: Any, alias: str = "") -> tuple[str, tuple[Any, ...]]:
    """A WHERE fragment (starting with AND) and its parameter for `owner` (nothing for ANY)."""
    if owner is ANY:
        return "", ()
    return f" AND {alias}owner IS ?", (owner,)


@dataclass(frozen=True)
class PartRef:
    batch_id: str
    part: int
    api_batch_id: str | None
    state: str
    polls: int


@dataclass(frozen=True)
class Settled:
    """One collected result, ready to be written with its attempt."""

    idx: int
    result_type: str
    text: str | None
    stop_reason: str | None
    error: str | None
    attempt: Attempt


# ItemRow: (idx, part, label, body, system, worst_pusd)
ItemRow = tuple[int, int, str, str, str | None, int]


async def create(
    ledger: Ledger,
    batch: NewBatch,
    items: Iterable[ItemRow],
    part_counts: Sequence[int],
    reservation_id: int,
    *,
    now: datetime | None = None,
) -> None:
    """Write the whole batch and take over its reservation, in one transaction, before any API call."""
    now = now or w.utcnow()
    async with ledger.write() as conn:
        await conn.execute(
            "INSERT INTO batches (id, created_at, session_id, policy, tier, model, baseline_model,"
            " request_count, worst_pusd, typical_pusd, sync_pusd, shared, reservation_id, state, retry_of, owner)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
            (
                batch.id,
                w.iso(now),
                batch.session_id,
                batch.policy,
                batch.tier,
                batch.model,
                batch.baseline_model,
                batch.request_count,
                batch.worst_pusd,
                batch.typical_pusd,
                batch.sync_pusd,
                batch.shared,
                reservation_id,
                batch.retry_of,
                batch.owner,
            ),
        )
        await conn.executemany(
            "INSERT INTO batch_parts (batch_id, part, request_count, state) VALUES (?, ?, ?, 'pending')",
            [(batch.id, i, n) for i, n in enumerate(part_counts)],
        )
        await conn.executemany(
            "INSERT INTO batch_items (batch_id, idx, part, label, body, system, worst_pusd)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((batch.id, *row) for row in items),
        )
        cur = await conn.execute(
            "UPDATE reservations SET pid = 0, host = ?, expires_at = ? WHERE id = ?",
            (BATCH_HOST, w.iso(now + timedelta(seconds=RESERVE_TTL_S)), reservation_id),
        )
        if cur.rowcount != 1:
            # The hold vanished (expired between reserve and here): refuse rather than run unbudgeted.
            raise RuntimeError(f"reservation {reservation_id} disappeared before batch {batch.id} was written")


async def begin_submit(ledger: Ledger, batch_id: str, part: int, *, lease_s: float = 600) -> bool:
    """Mark a part as being sent. From here until `submitted`, a crash leaves it 'unknown'."""
    now = w.utcnow()
    async with ledger.write() as conn:
        cur = await conn.execute(
            "UPDATE batch_parts SET state = 'submitting', submitted_at = ?, lease_owner = ?, lease_until = ?"
            " WHERE batch_id = ? AND part = ? AND state = 'pending'",
            (w.iso(now), lease_owner(), w.iso(now + timedelta(seconds=lease_s)), batch_id, part),
        )
        return cur.rowcount == 1


async def submitted(
    ledger: Ledger, batch_id: str, part: int, api_batch_id: str, expires_at: datetime | None, next_poll: datetime
) -> None:
    async with ledger.write() as conn:
        await conn.execute(
            "UPDATE batch_parts SET state = 'in_progress', api_batch_id = ?, expires_at = ?, next_poll_at = ?,"
            " lease_owner = NULL, lease_until = NULL WHERE batch_id = ? AND part = ?",
            (api_batch_id, w.iso(expires_at) if expires_at else None, w.iso(next_poll), batch_id, part),
        )


async def submit_failed(ledger: Ledger, batch_id: str, part: int, error: str, *, definite: bool) -> None:
    """The API refused the part (definite: nothing was created) or the answer was lost (unknown)."""
    async with ledger.write() as conn:
        if not definite:
            await conn.execute(
                "UPDATE batch_parts SET state = 'unknown', error = ?, lease_owner = NULL, lease_until = NULL"
                " WHERE batch_id = ? AND part = ?",
                (error, batch_id, part),
            )
            return
        await conn.execute(
            "UPDATE batch_parts SET state = 'failed', error = ?, lease_owner = NULL, lease_until = NULL"
            " WHERE batch_id = ? AND part = ?",
            (error, batch_id, part),
        )
        rows = await (
            await conn.execute(
                "UPDATE batch_items SET result_type = 'not_submitted', error = ?, cost_pusd = 0"
                " WHERE batch_id = ? AND part = ? AND result_type IS NULL RETURNING worst_pusd",
                (error, batch_id, part),
            )
        ).fetchall()
        await _cut_reservation(conn, batch_id, sum(int(r[0]) for r in rows))
        await _finish_if_done(conn, batch_id)


def part_rows(path: Path, batch_id: str, part: int, *, chunk: int = 2_000) -> Iterator[tuple[int, str, str | None]]:
    """(idx, body, system) of a part's requests, in order, read `chunk` rows at a time on a
    read-only connection of its own: for a worker thread streaming a create body, so memory holds
    one chunk, not the part. Every call starts from the first row (a retried send reads again)."""
    conn = open_ro(path)
    try:
        last = -1
        while True:
            rows = conn.execute(
                "SELECT idx, body, system FROM batch_items WHERE batch_id = ? AND part = ? AND idx > ?"
                " ORDER BY idx LIMIT ?",
                (batch_id, part, last, chunk),
            ).fetchall()
            if not rows:
                return
            for idx, body, system in rows:
                yield int(idx), str(body), system
            last = int(rows[-1][0])
    finally:
        conn.close()


async def part_items(ledger: Ledger, batch_id: str, part: int) -> list[tuple[int, str, str | None]]:
    """(idx, body, system) of a part's requests, in order."""
    rows = await (
        await ledger.conn.execute(
            "SELECT idx, body, system FROM batch_items WHERE batch_id = ? AND part = ? ORDER BY idx",
            (batch_id, part),
        )
    ).fetchall()
    return [(int(r[0]), str(r[1]), r[2]) for r in rows]


def _pid_dead(owner: str | None) -> bool:
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine: only its lease expiry can tell
    return not pid_alive(int(pid))


async def claim_due(
    ledger: Ledger, *, lease_s: float = 120, now: datetime | None = None, limit: int = 20
) -> list[PartRef]:
    """Take a lease on in-flight parts due for a poll; flag interrupted submissions as 'unknown'."""
    now = now or w.utcnow()
    stamp = w.iso(now)
    owner = lease_owner()
    # Every idle server runs this twice a second: look first, so nothing due takes no write lock.
    due = await (
        await ledger.conn.execute(
            "SELECT 1 FROM batch_parts WHERE state = 'submitting' OR (state IN ('in_progress', 'ended')"
            " AND (next_poll_at IS NULL OR next_poll_at <= ?)) LIMIT 1",
            (stamp,),
        )
    ).fetchone()
    if due is None:
        return []
    async with ledger.write() as conn:
        stale = await (
            await conn.execute(
                "SELECT batch_id, part, lease_owner, lease_until FROM batch_parts WHERE state = 'submitting'"
            )
        ).fetchall()
        for r in stale:
            # Our own submit may still be uploading: only its lease running out marks it here.
            if r[3] is None or r[3] < stamp or (r[2] != owner and _pid_dead(r[2])):
                await conn.execute(
                    "UPDATE batch_parts SET state = 'unknown', lease_owner = NULL, lease_until = NULL,"
                    " error = 'the server stopped while this part was being submitted'"
                    " WHERE batch_id = ? AND part = ? AND state = 'submitting'",
                    (r[0], r[1]),
                )
        rows = await (
            await conn.execute(
                "SELECT batch_id, part, api_batch_id, state, polls, lease_owner, lease_until FROM batch_parts"
                " WHERE state IN ('in_progress', 'ended') AND (next_poll_at IS NULL OR next_poll_at <= ?)"
                " ORDER BY next_poll_at LIMIT ?",
                (stamp, limit * 4),
            )
        ).fetchall()
        claimed: list[PartRef] = []
        until = w.iso(now + timedelta(seconds=lease_s))
        for r in rows:
            free = r[6] is None or r[6] < stamp or (r[5] != owner and _pid_dead(r[5]))
            if not free or len(claimed) >= limit:
                continue
            await conn.execute(
                "UPDATE batch_parts SET lease_owner = ?, lease_until = ? WHERE batch_id = ? AND part = ?",
                (owner, until, r[0], r[1]),
            )
            claimed.append(PartRef(str(r[0]), int(r[1]), r[2], str(r[3]), int(r[4])))
    return claimed


async def polled(ledger: Ledger, ref: PartRef, *, ended: bool, ended_at: datetime | None, next_poll: datetime) -> None:
    async with ledger.write() as conn:
        await conn.execute(
            "UPDATE batch_parts SET polls = polls + 1, next_poll_at = ?, state = ?, ended_at = ?,"
            " lease_owner = NULL, lease_until = NULL WHERE batch_id = ? AND part = ? AND lease_owner = ?",
            (
                w.iso(next_poll),
                "ended" if ended else ref.state,
                w.iso(ended_at) if ended_at else None,
                ref.batch_id,
                ref.part,
                lease_owner(),
            ),
        )


async def release_lease(ledger: Ledger, ref: PartRef, *, retry_at: datetime, error: str | None = None) -> None:
    async with ledger.write() as conn:
        await conn.execute(
            "UPDATE batch_parts SET lease_owner = NULL, lease_until = NULL, next_poll_at = ?, error = ?"
            " WHERE batch_id = ? AND part = ? AND lease_owner = ?",
            (w.iso(retry_at), error, ref.batch_id, ref.part, lease_owner()),
        )


async def batch_row(conn: Conn, batch_id: str, owner: Any = ANY) -> aiosqlite.Row | None:
    """The batch, if it exists and (unless `owner` is ANY) belongs to `owner`."""
    extra, args = _owned(owner)
    return await (await conn.execute(f"SELECT * FROM batches WHERE id = ?{extra}", (batch_id, *args))).fetchone()


async def settle(ledger: Ledger, ref: PartRef, results: Sequence[Settled], *, lease_s: float = 120) -> int:
    """Write results not yet settled, their attempts and the reservation cut; returns how many were new."""
    now = w.utcnow()
    new = 0
    released = 0
    async with ledger.write() as conn:
        for s in results:
            row = await (
                await conn.execute(
                    "UPDATE batch_items SET result_type = ?, text = ?, stop_reason = ?, error = ?, cost_pusd = ?"
                    " WHERE batch_id = ? AND idx = ? AND part = ? AND result_type IS NULL RETURNING worst_pusd",
                    (
                        s.result_type,
                        s.text,
                        s.stop_reason,
                        s.error,
                        s.attempt.cost_pusd,
                        ref.batch_id,
                        s.idx,
                        ref.part,
                    ),
                )
            ).fetchone()
            if row is None:
                continue  # settled before (an earlier or a parallel collector)
            await _insert(conn, s.attempt, now, ledger)
            released += int(row[0])
            new += 1
        await _cut_reservation(conn, ref.batch_id, released)
        await conn.execute(
            "UPDATE batch_parts SET lease_until = ? WHERE batch_id = ? AND part = ? AND lease_owner = ?",
            (w.iso(now + timedelta(seconds=lease_s)), ref.batch_id, ref.part, lease_owner()),
        )
    return new


async def unsettled(ledger: Ledger, ref: PartRef) -> list[int]:
    rows = await (
        await ledger.conn.execute(
            "SELECT idx FROM batch_items WHERE batch_id = ? AND part = ? AND result_type IS NULL ORDER BY idx",
            (ref.batch_id, ref.part),
        )
    ).fetchall()
    return [int(r[0]) for r in rows]


async def part_collected(ledger: Ledger, ref: PartRef) -> bool:
    """Close a fully settled part; close the batch (and drop its hold) when every part is closed."""
    async with ledger.write() as conn:
        left = await (
            await conn.execute(
                "SELECT COUNT(*) FROM batch_items WHERE batch_id = ? AND part = ? AND result_type IS NULL",
                (ref.batch_id, ref.part),
            )
        ).fetchone()
        if left is not None and int(left[0]) > 0:
            return False
        await conn.execute(
            "UPDATE batch_parts SET state = 'collected', lease_owner = NULL, lease_until = NULL"
            " WHERE batch_id = ? AND part = ?",
            (ref.batch_id, ref.part),
        )
        return await _finish_if_done(conn, ref.batch_id)


# The batch's own hold. Its id alone is not enough: once the hold expired and was purged (a batch
# collected past RESERVE_TTL_S), SQLite may have handed that id to another call's live hold.
_OWN_HOLD = "host = ? AND (id, session_id) = (SELECT reservation_id, session_id FROM batches WHERE id = ?)"


async def _cut_reservation(conn: aiosqlite.Connection, batch_id: str, amount: int) -> None:
    if amount:
        await conn.execute(
            "UPDATE reservations SET amount_pusd = MAX(0, amount_pusd - ?) WHERE " + _OWN_HOLD,
            (amount, BATCH_HOST, batch_id),
        )


async def _finish_if_done(conn: aiosqlite.Connection, batch_id: str) -> bool:
    row = await (
        await conn.execute(
            "SELECT COUNT(*) FROM batch_parts WHERE batch_id = ? AND state NOT IN ('collected', 'failed')",
            (batch_id,),
        )
    ).fetchone()
    if row is not None and int(row[0]) > 0:
        return False
    await conn.execute("DELETE FROM reservations WHERE " + _OWN_HOLD, (BATCH_HOST, batch_id))
    await conn.execute(
        "UPDATE batches SET state = 'done', reservation_id = NULL, settled_at = ? WHERE id = ? AND state = 'open'",
        (w.iso(w.utcnow()), batch_id),
    )
    return True


# -- reads for status, results and the CLI ---------------------------------------------------


async def list_batches(conn: Conn, *, include_done: bool, limit: int = 50, owner: Any = ANY) -> list[dict[str, Any]]:
    extra, args = _owned(owner, "b.")
    where = "WHERE 1 = 1" + ("" if include_done else " AND b.state = 'open'") + extra
    rows = await (
        await conn.execute(
            "SELECT b.id, b.created_at, b.session_id, b.tier, b.model, b.request_count, b.worst_pusd,"
            " b.typical_pusd, b.sync_pusd, b.state, b.retry_of, b.settled_at,"
            " (SELECT COUNT(*) FROM batch_items i WHERE i.batch_id = b.id AND i.result_type IS NOT NULL),"
            " (SELECT COALESCE(SUM(cost_pusd), 0) FROM batch_items i WHERE i.batch_id = b.id)"
            f" FROM batches b {where} ORDER BY b.created_at DESC LIMIT ?",
            (*args, limit),
        )
    ).fetchall()
    keys = [
        "id",
        "created_at",
        "session_id",
        "tier",
        "model",
        "request_count",
        "worst_pusd",
        "typical_pusd",
        "sync_pusd",
        "state",
        "retry_of",
        "settled_at",
        "settled",
        "cost_pusd",
    ]
    return [dict(zip(keys, tuple(r), strict=True)) for r in rows]


async def counts(conn: Conn, batch_id: str) -> dict[str, int]:
    rows = await (
        await conn.execute(
            "SELECT COALESCE(result_type, 'pending'), COUNT(*) FROM batch_items WHERE batch_id = ? GROUP BY 1",
            (batch_id,),
        )
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


async def cost_so_far(conn: Conn, batch_id: str) -> int:
    row = await (
        await conn.execute("SELECT COALESCE(SUM(cost_pusd), 0) FROM batch_items WHERE batch_id = ?", (batch_id,))
    ).fetchone()
    return int(row[0]) if row is not None else 0


async def parts(conn: Conn, batch_id: str) -> list[aiosqlite.Row]:
    return list(
        await (await conn.execute("SELECT * FROM batch_parts WHERE batch_id = ? ORDER BY part", (batch_id,))).fetchall()
    )


async def items_page(conn: Conn, batch_id: str, offset: int, limit: int) -> list[aiosqlite.Row]:
    return list(
        await (
            await conn.execute(
                "SELECT idx, label, result_type, text, stop_reason, error, cost_pusd FROM batch_items"
                " WHERE batch_id = ? ORDER BY idx LIMIT ? OFFSET ?",
                (batch_id, limit, offset),
            )
        ).fetchall()
    )


async def retry_items(conn: Conn, batch_id: str) -> list[aiosqlite.Row]:
    """Items worth resubmitting: failed at the API, never sent, or in a part whose fate is unknown."""
    return list(
        await (
            await conn.execute(
                "SELECT i.idx, i.label, i.body, i.system FROM batch_items i JOIN batch_parts p"
                " ON p.batch_id = i.batch_id AND p.part = i.part WHERE i.batch_id = ? AND ("
                " i.result_type IN ('errored', 'expired', 'canceled', 'missing', 'not_submitted')"
                " OR (i.result_type IS NULL AND p.state = 'unknown')) ORDER BY i.idx",
                (batch_id,),
            )
        ).fetchall()
    )


# -- retention ---------------------------------------------------------------------------------

# The API keeps results for 29 days; so do we, then only counts and costs stay (the ledger's
# attempt rows are never touched: spend history is forever).
PAYLOAD_DAYS = 29


async def forget_payloads(ledger: Ledger, older_than_days: int = PAYLOAD_DAYS, *, now: datetime | None = None) -> int:
    """Blank the prompts and answers of batches settled more than `older_than_days` ago."""
    cutoff = w.iso((now or w.utcnow()) - timedelta(days=older_than_days))
    async with ledger.write() as conn:
        # shared = '{}' marks a batch already forgotten: each start touches only newly old ones.
        cur = await conn.execute(
            "UPDATE batch_items SET label = 'item ' || idx, body = '', system = NULL, text = NULL"
            " WHERE batch_id IN (SELECT id FROM batches WHERE state = 'done' AND settled_at < ? AND shared != '{}')",
            (cutoff,),
        )
        changed = cur.rowcount
        await cur.close()
        await conn.execute(
            "UPDATE batches SET shared = '{}' WHERE state = 'done' AND settled_at < ? AND shared != '{}'", (cutoff,)
        )
    return max(changed, 0)


async def list_batches_readonly(path: Path, include_done: bool) -> list[dict[str, Any]]:
    """`list_batches` on a read-only connection: listing must not migrate or switch the file to WAL."""
    uri = ro_uri(path)
    hint = "pass the server's ledger with --db FILE or OFFLOAD_DB"
    try:
        async with aiosqlite.connect(uri, uri=True) as conn:
            await conn.execute("PRAGMA query_only = ON")
            return await list_batches(conn, include_done=include_done, limit=200)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise InputError(f"{path} is not an offload ledger ({exc}); {hint}") from None
        raise InputError(f"cannot read the ledger {path} ({exc}); {hint}") from None
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path} is not an offload ledger ({exc}); {hint}") from None
