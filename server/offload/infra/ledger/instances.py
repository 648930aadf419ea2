"""Server instances and their leases: who may still hold money and claims, on any host.

A server registers an instance (random id, host id, pid) and a background task refreshes its
lease every third of it. Holds and batch claims name their instance; once its lease has run out
they are dead wherever they were taken, and the next reserve (or claim) purges them. A pid says
something only on its own host, so it is consulted only for instances with our host id: there a
dead pid frees them at once instead of after the lease.

A server that was merely stalled past its lease (a suspended laptop) loses its holds; its next
heartbeat registers it again and its later calls reserve afresh.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from offload.core.errors import LedgerUnavailableError
from offload.infra.ledger import windows as w
from offload.infra.ledger.statusline import LIVE_HOLD
from offload.infra.processes import host_id, pid_alive

if TYPE_CHECKING:
    from offload.infra.ledger.db import Conn, Ledger, WriteConn

log = logging.getLogger("offload.ledger")

__all__ = ["LEASE_S", "LIVE_HOLD", "Instance", "ensure", "heartbeat", "kept_alive", "purge_dead", "retire", "touch"]

# Default (OFFLOAD_LEASE_S): a dead server's holds and claims free within it. Three times the ledger's
# 30 s busy timeout: a heartbeat waits for the write lock like any write, and one stuck behind a
# long write (a 60k-item batch being stored) must not cost a live server its holds.
LEASE_S = 90


@dataclass(frozen=True)
class Instance:
    id: str
    host_id: str
    pid: int
    lease_s: float

    @classmethod
    def new(cls, lease_s: float = LEASE_S, host: str | None = None) -> Instance:
        return cls("i_" + secrets.token_hex(8), host or host_id(), os.getpid(), lease_s)


# How far the last committed heartbeat of each of this process's instances extended its lease.
_leased: dict[str, datetime] = {}


async def heartbeat(ledger: Ledger, instance: Instance, now: datetime | None = None) -> bool:
    """Register or extend `instance`'s lease; False when it had lapsed (its holds were purged)."""
    now = now or w.utcnow()
    async with ledger.write(inline=True) as conn:
        extended = await touch(conn, instance, now)
    _leased[instance.id] = now + timedelta(seconds=instance.lease_s)
    return extended


async def ensure(conn: WriteConn, instance: Instance, now: datetime) -> None:
    """Inside a reserve's transaction: the instance's row must be there, so a hold is never written
    for an instance another server has just purged as dead. While the last heartbeat left at least
    two thirds of the lease (the heartbeat renews every third), reading the row proves it; only
    past that does the reserve renew the lease itself: rewriting the row's page on every reserve
    made each settled call write one more page under the ledger's write lock."""
    until = _leased.get(instance.id)
    if until is not None and until - now >= timedelta(seconds=instance.lease_s * 2 / 3):
        cur = await conn.execute("SELECT 1 FROM server_instances WHERE id = ?", (instance.id,))
        if await cur.fetchone() is not None:
            return
    await touch(conn, instance, now)


async def touch(conn: WriteConn, instance: Instance, now: datetime) -> bool:
    """`heartbeat` inside the caller's write transaction (a reserve renews its own lease too, so a
    hold is never written for an instance another server has just purged as dead)."""
    stamp, until = w.iso(now), w.iso(now + timedelta(seconds=instance.lease_s))
    cur = await conn.execute(
        "UPDATE server_instances SET heartbeat_at = ?, lease_until = ? WHERE id = ?", (stamp, until, instance.id)
    )
    if cur.rowcount == 1:
        return True
    await conn.execute(
        "INSERT INTO server_instances (id, host_id, pid, started_at, heartbeat_at, lease_until)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (instance.id, instance.host_id, instance.pid, stamp, stamp, until),
    )
    return False


async def retire(ledger: Ledger, instance: Instance) -> None:
    """A clean stop: whatever the instance still held stops counting now, not after its lease.

    Only the instance row goes here: its leftover holds (a paid answer spooled to the journal
    keeps one until replayed) are purged by the next reserve, as a dead instance's are.
    """
    _leased.pop(instance.id, None)
    async with ledger.write(inline=True) as conn:
        await conn.execute("DELETE FROM server_instances WHERE id = ?", (instance.id,))


def host_of(me: Instance | None) -> str:
    """This host's id as instances record it (pids compare only within one host)."""
    return me.host_id if me is not None else host_id()


async def _registered(conn: Conn, now: datetime, me: Instance | None) -> tuple[list[str], list[str]]:
    """(dead, alive) instance ids: dead if the lease ran out or (on our host) the process is gone."""
    rows = await (await conn.execute("SELECT id, host_id, pid, lease_until FROM server_instances")).fetchall()
    here = host_of(me)
    stamp = w.iso(now)
    dead: list[str] = []
    alive: list[str] = []
    for r in rows:
        gone = str(r[3]) <= stamp or (str(r[1]) == here and int(r[2]) != os.getpid() and not pid_alive(int(r[2])))
        (dead if gone and (me is None or str(r[0]) != me.id) else alive).append(str(r[0]))
    return dead, alive


async def purge_dead(conn: Conn, now: datetime, me: Instance | None) -> list[str]:
    """Drop dead instances with their holds (inside the caller's write transaction); the ids of
    the instances left, every one alive."""
    gone, alive = await _registered(conn, now, me)
    if gone:
        await _drop(conn, gone)
    await conn.execute(
        "DELETE FROM reservations WHERE instance_id IS NOT NULL"
        " AND instance_id NOT IN (SELECT id FROM server_instances)"
    )
    return alive


async def _drop(conn: Conn, ids: list[str]) -> None:
    marks = ",".join("?" * len(ids))
    await conn.execute(f"DELETE FROM reservations WHERE instance_id IN ({marks})", ids)
    await conn.execute(f"DELETE FROM server_instances WHERE id IN ({marks})", ids)


@asynccontextmanager
async def kept_alive(ledger: Ledger, lease_s: float = LEASE_S, host: str | None = None) -> AsyncIterator[Instance]:
    """Register an instance for `ledger`, heartbeat it while the block runs, retire it after.

    Holds are stamped with the instance (`ledger.instance`) only once its row is written: a hold
    naming an unregistered instance would not count against any budget.
    """
    instance = Instance.new(lease_s, host)
    registered = await _beat_once(ledger, instance, registered=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_beat, ledger, instance, registered)
        try:
            yield instance
        finally:
            tg.cancel_scope.cancel()
    ledger.instance = None
    with anyio.CancelScope(shield=True):
        try:
            await retire(ledger, instance)
        except LedgerUnavailableError as exc:
            log.warning("server instance %s not retired (its lease will run out): %s", instance.id, exc)


async def _beat(ledger: Ledger, instance: Instance, registered: bool) -> None:
    while True:
        await anyio.sleep(instance.lease_s / 3)
        registered = await _beat_once(ledger, instance, registered=registered)


async def _beat_once(ledger: Ledger, instance: Instance, *, registered: bool) -> bool:
    try:
        extended = await heartbeat(ledger, instance)
    except LedgerUnavailableError as exc:
        log.warning("heartbeat of server instance %s failed: %s", instance.id, exc)
        return registered
    if registered and not extended:
        log.warning("server instance %s outlived its lease; holds it had were freed", instance.id)
    ledger.instance = instance
    return True
