"""All batch SQL: the local record of a batch, its API parts, items, leases and settlement.

Exactly-once settlement: an item's result is written with `... WHERE result_type IS NULL` in the
same IMMEDIATE transaction as its attempt row (idempotent on `batch:<api id>:<custom_id>`) and
the matching cut of the batch's reservation, so a collector killed at any point, or two
collectors racing, can neither count an item twice nor release its hold twice.

A batch's reservation is detached from the submitting process (pid 0, host BATCH_HOST, no
instance): neither the pid check nor an instance's lease in budgets.py frees it, so the hold
survives restarts and lasts until the batch settles or the hold expires (RESERVE_TTL_S).

Part claims (lease_owner) name the claiming server instance (instances.py): a claim of an
instance whose heartbeat lease ran out is free for any other replica, on any host, without
waiting for the claim's own lease_until; on the claimant's host a dead pid frees it at once.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.core.errors import InputError
from offload.core.recall import new_call_id
from offload.infra.ledger import instances, pg
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import HOLD, Reservation, acting, hold_key
from offload.infra.ledger.learning import CallRecord, insert_call
from offload.infra.ledger.lite import BUSY_TIMEOUT_MS, LiteConn
from offload.infra.ledger.records import Attempt, _insert
from offload.infra.ledger.statusline import open_ro, ro_uri
from offload.infra.processes import pid_alive

if TYPE_CHECKING:
    from offload.infra.ledger.db import Conn, Ledger, WriteConn

BATCH_HOST = "batch"  # reservations.host of holds owned by a batch, not by a process
RESERVE_TTL_S = 25 * 3600  # the API expires a batch after 24 h; results may land just after
OPEN_PART_STATES = ("pending", "submitting", "in_progress", "ended", "unknown")


def new_batch_id() -> str:
    return "b_" + secrets.token_hex(6)


def lease_owner(ledger: Ledger) -> str:
    """Who claims a part: the server instance, else (no instance registered) host:pid:token."""
    if ledger.instance is not None:
        return ledger.instance.id
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
    quality: str = "{}"  # JSON: task, difficulty, max_tokens and the checks (see 0140_batch_quality.sql)
    root_id: str | None = None  # a follow-up round: the batch the host knows
    round: int = 0


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
    failed_check: str | None = None
    escalate: bool = False  # re-asked one tier up in the next round
    # A final answer's calls row (its call_id is redrawn on a clash) and per-tier evidence.
    call: CallRecord | None = None
    evidence: tuple[tuple[str, bool | None], ...] = ()


# ItemRow: (idx, part, label, body, system, worst_pusd)
ItemRow = tuple[int, int, str, str, str | None, int]


async def create(
    ledger: Ledger,
    batch: NewBatch,
    items: Iterable[ItemRow],
    part_counts: Sequence[int],
    reservation: Reservation,
    *,
    now: datetime | None = None,
) -> None:
    """Write the whole batch and take over its reservation, in one transaction, before any API call."""
    # Its results are spend of the submitter's user and project, whichever process collects them.
    who = acting(ledger)
    async with ledger.write() as conn:
        await _insert_batch(conn, batch, items, part_counts, reservation, now or w.utcnow(), who.user, who.project)


async def create_followup(
    ledger: Ledger,
    parent_id: str,
    batch: NewBatch,
    items: Iterable[ItemRow],
    part_counts: Sequence[int],
    reservation: Reservation,
) -> bool:
    """Write the next round of an 'escalating' batch, and mark the parent 'followed' by it, in one
    transaction: a restart at any point either sees the follow-up saved (and sends or collects it)
    or sees the parent still owing one. False, with nothing written, if another process made it."""
    async with ledger.write() as conn:
        cur = await conn.execute(
            "UPDATE batches SET state = 'followed', followup_id = ? WHERE id = ? AND state = 'escalating'",
            (batch.id, parent_id),
        )
        if cur.rowcount != 1:
            return False
        # A round is the submitter's spend, whichever process (and user) collects and re-asks it.
        row = await (await conn.execute("SELECT user_name, project FROM batches WHERE id = ?", (parent_id,))).fetchone()
        user, project = (row[0], row[1]) if row else (None, None)
        await _insert_batch(conn, batch, items, part_counts, reservation, w.utcnow(), user, project)
    return True


async def _insert_batch(
    conn: WriteConn,
    batch: NewBatch,
    items: Iterable[ItemRow],
    part_counts: Sequence[int],
    reservation: Reservation,
    now: datetime,
    user: str | None,
    project: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO batches (id, created_at, session_id, policy, tier, model, baseline_model,"
        " request_count, worst_pusd, typical_pusd, sync_pusd, shared, reservation_id, state, retry_of, owner,"
        " quality, root_id, round, user_name, project)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?)",
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
            reservation.id,
            batch.retry_of,
            batch.owner,
            batch.quality,
            batch.root_id,
            batch.round,
            user,
            project,
        ),
    )
    await conn.executemany(
        "INSERT INTO batch_parts (batch_id, part, request_count, state) VALUES (?, ?, ?, 'pending')",
        [(batch.id, i, n) for i, n in enumerate(part_counts)],
    )
    await conn.executemany(
        "INSERT INTO batch_items (batch_id, idx, part, label, body, system, worst_pusd) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ((batch.id, *row) for row in items),
    )
    cur = await conn.execute(
        "UPDATE reservations SET pid = 0, host = ?, instance_id = NULL, expires_at = ? WHERE " + HOLD,
        (BATCH_HOST, w.iso(now + timedelta(seconds=RESERVE_TTL_S)), *hold_key(reservation)),
    )
    if cur.rowcount != 1:
        # The hold vanished (expired between reserve and here): refuse rather than run unbudgeted.
        raise RuntimeError(f"reservation {reservation.id} disappeared before batch {batch.id} was written")


async def begin_submit(ledger: Ledger, batch_id: str, part: int, *, lease_s: float = 600) -> bool:
    """Mark a part as being sent. From here until `submitted`, a crash leaves it 'unknown'."""
    now = w.utcnow()
    async with ledger.write() as conn:
        cur = await conn.execute(
            "UPDATE batch_parts SET state = 'submitting', submitted_at = ?, lease_owner = ?, lease_until = ?"
            " WHERE batch_id = ? AND part = ? AND state = 'pending'",
            (w.iso(now), lease_owner(ledger), w.iso(now + timedelta(seconds=lease_s)), batch_id, part),
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


def part_rows(
    target: Path | str, batch_id: str, part: int, *, chunk: int = 2_000
) -> Iterator[tuple[int, str, str | None]]:
    """(idx, body, system) of a part's requests, in order, read `chunk` rows at a time on a
    read-only connection of its own (to the SQLite file, or the PostgreSQL URL `target`): for a
    worker thread streaming a create body, so memory holds one chunk, not the part. Every call
    starts from the first row (a retried send reads again)."""
    conn: sqlite3.Connection | pg.SyncConn
    conn = pg.connect_sync(str(target)) if pg.is_url(target) else open_ro(Path(target))
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


def _pid_dead(owner: str | None, live_instances: set[str]) -> bool:
    """Is the claimant gone? An instance: it has no row left (its lease ran out, or its pid died
    on our host, and it was purged); a claim from before instances: its pid, on our host only."""
    if not owner:
        return True
    if ":" not in owner:
        return owner not in live_instances
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
    owner = lease_owner(ledger)
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
        # Dead instances go first (with their holds): a claim naming no instance row left is free.
        live = set(await instances.purge_dead(conn, now, ledger.instance))

        def dead(claimant: str | None) -> bool:
            return claimant != owner and _pid_dead(claimant, live)

        stale = await (
            await conn.execute(
                "SELECT batch_id, part, lease_owner, lease_until FROM batch_parts WHERE state = 'submitting'"
            )
        ).fetchall()
        for r in stale:
            # Our own submit may still be uploading: only its lease running out marks it here.
            if r[3] is None or r[3] < stamp or dead(r[2]):
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
            free = r[6] is None or r[6] < stamp or dead(r[5])
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
                lease_owner(ledger),
            ),
        )


async def release_lease(ledger: Ledger, ref: PartRef, *, retry_at: datetime, error: str | None = None) -> None:
    async with ledger.write() as conn:
        await conn.execute(
            "UPDATE batch_parts SET lease_owner = NULL, lease_until = NULL, next_poll_at = ?, error = ?"
            " WHERE batch_id = ? AND part = ? AND lease_owner = ?",
            (w.iso(retry_at), error, ref.batch_id, ref.part, lease_owner(ledger)),
        )


async def batch_row(conn: Conn, batch_id: str, owner: Any = ANY) -> sqlite3.Row | None:
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
                    "UPDATE batch_items SET result_type = ?, text = ?, stop_reason = ?, error = ?, cost_pusd = ?,"
                    " failed_check = ?, escalate = ?"
                    " WHERE batch_id = ? AND idx = ? AND part = ? AND result_type IS NULL RETURNING worst_pusd",
                    (
                        s.result_type,
                        s.text,
                        s.stop_reason,
                        s.error,
                        s.attempt.cost_pusd,
                        s.failed_check,
                        int(s.escalate),
                        ref.batch_id,
                        s.idx,
                        ref.part,
                    ),
                )
            ).fetchone()
            if row is None:
                continue  # settled before (an earlier or a parallel collector)
            await _insert(conn, s.attempt, now, ledger, own=True)
            if s.call is not None:
                await _record_call(conn, ref.batch_id, s, w.iso(now))
            released += int(row[0])
            new += 1
        await _cut_reservation(conn, ref.batch_id, released)
        await conn.execute(
            "UPDATE batch_parts SET lease_until = ? WHERE batch_id = ? AND part = ? AND lease_owner = ?",
            (w.iso(now + timedelta(seconds=lease_s)), ref.batch_id, ref.part, lease_owner(ledger)),
        )
    return new


CALL_ID_DRAWS = 8  # as routed_complete: a clash with an earlier answer's id draws again


async def _record_call(conn: WriteConn, batch_id: str, s: Settled, ts: str) -> None:
    assert s.call is not None
    call = s.call
    for _ in range(CALL_ID_DRAWS):
        if await insert_call(conn, call, s.evidence, ts):
            await conn.execute(
                "UPDATE batch_items SET call_id = ? WHERE batch_id = ? AND idx = ?", (call.call_id, batch_id, s.idx)
            )
            return
        call = replace(call, call_id=new_call_id())


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


async def _cut_reservation(conn: WriteConn, batch_id: str, amount: int) -> None:
    if amount:
        await conn.execute(
            # CASE, not MAX(0, x): two-argument MAX is SQLite's alone (PostgreSQL says GREATEST).
            "UPDATE reservations SET amount_pusd = CASE WHEN amount_pusd > ? THEN amount_pusd - ? ELSE 0 END WHERE "
            + _OWN_HOLD,
            (amount, amount, BATCH_HOST, batch_id),
        )


async def _finish_if_done(conn: WriteConn, batch_id: str) -> bool:
    row = await (
        await conn.execute(
            "SELECT COUNT(*) FROM batch_parts WHERE batch_id = ? AND state NOT IN ('collected', 'failed')",
            (batch_id,),
        )
    ).fetchone()
    if row is not None and int(row[0]) > 0:
        return False
    await conn.execute("DELETE FROM reservations WHERE " + _OWN_HOLD, (BATCH_HOST, batch_id))
    owed = await (
        await conn.execute("SELECT 1 FROM batch_items WHERE batch_id = ? AND escalate = 1 LIMIT 1", (batch_id,))
    ).fetchone()
    stamp = w.iso(w.utcnow())
    if owed is not None:
        # Its hold is spent; the next round reserves its own before it is written.
        await conn.execute(
            "UPDATE batches SET state = 'escalating', reservation_id = NULL WHERE id = ? AND state = 'open'",
            (batch_id,),
        )
        return True
    await conn.execute(
        "UPDATE batches SET state = 'done', reservation_id = NULL, settled_at = ? WHERE id = ? AND state = 'open'",
        (stamp, batch_id),
    )
    # The last round closes every earlier round of its batch, the root first among them.
    await conn.execute(
        "UPDATE batches SET state = 'done', settled_at = ? WHERE state = 'followed'"
        " AND id IN (SELECT root_id FROM batches WHERE id = ? UNION SELECT id FROM batches"
        " WHERE root_id = (SELECT root_id FROM batches WHERE id = ?))",
        (stamp, batch_id, batch_id),
    )
    return True


async def give_up(ledger: Ledger, batch_id: str, reason: str) -> None:
    """No next round can be made (budget, policy): the owed items stand failed with `reason`."""
    async with ledger.write() as conn:
        await conn.execute(
            "UPDATE batch_items SET escalate = 0, error = ? WHERE batch_id = ? AND escalate = 1", (reason, batch_id)
        )
        await conn.execute("UPDATE batches SET state = 'open' WHERE id = ? AND state = 'escalating'", (batch_id,))
        await _finish_if_done(conn, batch_id)


async def followup_work(conn: Conn, stale_before: str, limit: int = 10) -> tuple[list[str], list[str]]:
    """(batches whose settled round owes a follow-up round, batches with a part saved but not sent),
    in one read: every idle collector asks this twice a second. Unsent parts are those of follow-up
    rounds (the process making them stopped) and of first rounds created before `stale_before`
    (their submitter died between parts; a live one sends every part well within that).
    `begin_submit` claims a part once, so nothing goes twice."""
    rows = await (
        await conn.execute(
            "SELECT 0, id FROM (SELECT id FROM batches WHERE state = 'escalating' ORDER BY created_at LIMIT ?) AS owed"
            " UNION ALL SELECT 1, batch_id FROM (SELECT DISTINCT p.batch_id FROM batch_parts p"
            " JOIN batches b ON b.id = p.batch_id WHERE p.state = 'pending'"
            " AND (b.root_id IS NOT NULL OR b.created_at < ?) LIMIT ?) AS unsent",
            (limit, stale_before, limit),
        )
    ).fetchall()
    return [str(r[1]) for r in rows if int(r[0]) == 0], [str(r[1]) for r in rows if int(r[0]) == 1]


async def item_of_call(conn: Conn, call_id: str) -> sqlite3.Row | None:
    """The batch item whose final answer is `call_id`, with what rebuilding its request needs, and
    the call that redid it (if any). None for a routed_complete answer or an unknown id."""
    return await (
        await conn.execute(
            "SELECT b.session_id, b.owner, b.tier, b.shared, b.quality, i.body, i.system,"
            " (SELECT r.call_id FROM calls r WHERE r.redo_of = i.call_id LIMIT 1) AS redone_as"
            " FROM batch_items i JOIN batches b ON b.id = i.batch_id WHERE i.call_id = ?",
            (call_id,),
        )
    ).fetchone()


async def owed_items(conn: Conn, batch_id: str) -> list[sqlite3.Row]:
    """The items of a settled round to re-ask in the next one, in order."""
    return list(
        await (
            await conn.execute(
                "SELECT idx, label, body, system, failed_check FROM batch_items"
                " WHERE batch_id = ? AND escalate = 1 ORDER BY idx",
                (batch_id,),
            )
        ).fetchall()
    )


async def round_tiers(conn: Conn, batch_id: str) -> list[str]:
    """The tiers of a batch's rounds up to and including `batch_id`'s, first round first."""
    rows = await (
        await conn.execute(
            "SELECT tier FROM batches WHERE (id = ? OR id = (SELECT root_id FROM batches WHERE id = ?)"
            " OR root_id = (SELECT root_id FROM batches WHERE id = ?))"
            " AND round <= (SELECT round FROM batches WHERE id = ?) ORDER BY round",
            (batch_id, batch_id, batch_id, batch_id),
        )
    ).fetchall()
    return [str(r[0]) for r in rows]


# -- reads for status, results and the CLI ---------------------------------------------------


async def list_batches(conn: Conn, *, include_done: bool, limit: int = 50, owner: Any = ANY) -> list[dict[str, Any]]:
    extra, args = _owned(owner, "b.")
    # Follow-up rounds are shown through their root: one batch id per batch_submit.
    where = "WHERE b.root_id IS NULL" + ("" if include_done else " AND b.state != 'done'") + extra
    rows = await (
        await conn.execute(
            "SELECT b.id, b.created_at, b.session_id, b.tier, b.model, b.request_count, b.worst_pusd,"
            " b.typical_pusd, b.sync_pusd, b.state, b.retry_of, b.settled_at,"
            " (SELECT COUNT(*) FROM batch_items i WHERE i.batch_id = b.id AND i.result_type IS NOT NULL),"
            " (SELECT COALESCE(SUM(cost_pusd), 0) FROM batch_items i JOIN batches r ON r.id = i.batch_id"
            "  WHERE r.id = b.id OR r.root_id = b.id)"
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


# Every round of a batch: the batch itself and the follow-up rounds whose root it is.
_FAMILY = "SELECT id FROM batches WHERE id = ? OR root_id = ?"
# The one row per item whose answer stands: a row re-asked in a round that exists is superseded.
_STANDS = "(i.escalate = 0 OR b.followup_id IS NULL)"
_ITEM_COLS = (
    "i.idx, i.label, i.result_type, i.text, i.stop_reason, i.error, i.cost_pusd, i.failed_check, i.escalate, i.call_id"
)


def final_status(row: Any) -> str:
    """What became of an item, as the host sees it: pending while re-asked, failed when its last
    answer failed its check."""
    if row["result_type"] is None or row["escalate"]:
        return "pending"
    if row["result_type"] == "succeeded" and row["failed_check"]:
        return "failed"
    return str(row["result_type"])


async def counts(conn: Conn, batch_id: str) -> dict[str, int]:
    """Items by `final_status`, over the answers that stand."""
    rows = await (
        await conn.execute(
            "SELECT CASE WHEN i.result_type IS NULL OR i.escalate = 1 THEN 'pending'"
            " WHEN i.result_type = 'succeeded' AND i.failed_check IS NOT NULL THEN 'failed' ELSE i.result_type END,"
            " COUNT(*) FROM batch_items i JOIN batches b ON b.id = i.batch_id"
            f" WHERE i.batch_id IN ({_FAMILY}) AND {_STANDS} GROUP BY 1",
            (batch_id, batch_id),
        )
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


async def cost_so_far(conn: Conn, batch_id: str) -> int:
    row = await (
        await conn.execute(
            "SELECT COALESCE(SUM(cost_pusd), 0) FROM batch_items WHERE batch_id IN (" + _FAMILY + ")",
            (batch_id, batch_id),
        )
    ).fetchone()
    return int(row[0]) if row is not None else 0


async def parts(conn: Conn, batch_id: str) -> list[sqlite3.Row]:
    """Every API part of every round (a round's parts follow the earlier rounds')."""
    return list(
        await (
            await conn.execute(
                "SELECT p.* FROM batch_parts p JOIN batches b ON b.id = p.batch_id"
                " WHERE p.batch_id IN (" + _FAMILY + ") ORDER BY b.round, p.part",
                (batch_id, batch_id),
            )
        ).fetchall()
    )


async def rounds(conn: Conn, batch_id: str) -> list[sqlite3.Row]:
    return list(
        await (
            await conn.execute(
                "SELECT id, round, tier, model, request_count, state FROM batches WHERE id = ? OR root_id = ?"
                " ORDER BY round",
                (batch_id, batch_id),
            )
        ).fetchall()
    )


async def items_page(conn: Conn, batch_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
    """A page of the answers that stand, in the order submitted, each with its tier and what all
    its rounds cost. Paged on the first round's rows (one index range), later rounds looked up
    for that range only: a page costs the same at any offset of a 10^5-item batch."""
    first = await (
        await conn.execute(
            f"SELECT {_ITEM_COLS}, b.tier FROM batch_items i JOIN batches b ON b.id = i.batch_id"
            " WHERE i.batch_id = ? ORDER BY i.idx LIMIT ? OFFSET ?",
            (batch_id, limit, offset),
        )
    ).fetchall()
    page = [dict(r) for r in first]
    if not any(r["escalate"] for r in page):
        return page
    by_idx = {r["idx"]: r for r in page}
    later = await (
        await conn.execute(
            f"SELECT {_ITEM_COLS}, b.tier FROM batches b JOIN batch_items i ON i.batch_id = b.id"
            " WHERE b.root_id = ? AND i.idx BETWEEN ? AND ? ORDER BY b.round",
            (batch_id, page[0]["idx"], page[-1]["idx"]),
        )
    ).fetchall()
    for r in later:
        row = dict(r)
        if row["idx"] in by_idx:
            spent = (by_idx[row["idx"]]["cost_pusd"] or 0) + (row["cost_pusd"] or 0)
            by_idx[row["idx"]] = {**row, "cost_pusd": spent}
    return [by_idx[r["idx"]] for r in page]


async def retry_items(conn: Conn, batch_id: str) -> list[sqlite3.Row]:
    """Items worth resubmitting: failed at the API, never sent, or in a part whose fate is unknown,
    in whichever round of the batch their standing row is."""
    return list(
        await (
            await conn.execute(
                "SELECT i.idx, i.label, i.body, i.system FROM batch_items i JOIN batch_parts p"
                " ON p.batch_id = i.batch_id AND p.part = i.part JOIN batches b ON b.id = i.batch_id"
                f" WHERE i.batch_id IN ({_FAMILY}) AND {_STANDS} AND ("
                " i.result_type IN ('errored', 'expired', 'canceled', 'missing', 'not_submitted')"
                " OR (i.result_type IS NULL AND p.state = 'unknown')) ORDER BY i.idx",
                (batch_id, batch_id),
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


async def list_batches_readonly(path: Path | str, include_done: bool) -> list[dict[str, Any]]:
    """`list_batches` on a read-only connection: listing must not migrate or switch the file to WAL.

    `path` may be a postgresql:// URL: then a plain connection, which migrates nothing either."""
    hint = "pass the server's ledger with --db FILE or OFFLOAD_DB"
    if pg.is_url(path):
        return await _list_shared(str(path), include_done, hint)
    uri = ro_uri(Path(path))
    try:
        conn = await LiteConn.connect(uri, uri=True, busy_timeout_ms=BUSY_TIMEOUT_MS)
        try:
            await conn.execute("PRAGMA query_only = ON")
            return await list_batches(conn, include_done=include_done, limit=200)
        finally:
            await conn.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise InputError(f"{path} is not an offload ledger ({exc}); {hint}") from None
        raise InputError(f"cannot read the ledger {path} ({exc}); {hint}") from None
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path} is not an offload ledger ({exc}); {hint}") from None


async def _list_shared(url: str, include_done: bool, hint: str) -> list[dict[str, Any]]:
    conn = await pg.connect(url)
    try:
        return await list_batches(conn, include_done=include_done, limit=200)
    except pg.driver().errors.UndefinedTable as exc:
        raise InputError(f"{pg.redact(url)} holds no offload ledger ({str(exc).strip()}); {hint}") from None
    finally:
        await conn.close()
