"""Server instance leases: holds and batch claims of a server whose heartbeat stopped are dead on
every host; a pid is consulted only on its own host.

Real parts: SQLite files shared by several connections, `offload serve` subprocesses killed with
SIGKILL, the emulator, the real collector.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from helpers import VENV_BIN, handshake, query, server_env
from offload.config.settings import Settings
from offload.core.errors import BudgetExceededError
from offload.infra.ledger import batches as store
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import BudgetLimits, headroom, reserve
from offload.infra.ledger.dashboard import budgets as dashboard_budgets
from offload.infra.ledger.dashboard import reading
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.instances import Instance, heartbeat, kept_alive
from offload.infra.ledger.records import record_policy
from offload.infra.ledger.statusline import read_statusline
from offload.infra.processes import host_id
from offload.services.batches import run_once
from offload.state import open_state

pytestmark = pytest.mark.anyio
LIMITS = BudgetLimits(daily_pusd=1000)


async def _ledger(db: Path, instance: Instance | None = None, now: Any = None) -> Ledger:
    led = await Ledger.open(db)
    if instance is not None:
        await heartbeat(led, instance, now=now)
        led.instance = instance
    return led


async def test_a_hold_counts_while_its_instance_heartbeats_and_not_after(tmp_path: Path) -> None:
    db, t0 = tmp_path / "ledger.db", w.utcnow()
    # Same process, so its pid is alive: only the lease can tell it is gone (as on another host).
    far = Instance.new(lease_s=30, host="another-machine")
    other = await _ledger(db, far, t0)
    me = await _ledger(db, Instance.new(lease_s=30), t0)
    try:
        await reserve(other, "s-far", 900, LIMITS, now=t0)
        with pytest.raises(BudgetExceededError, match="reserved"):
            await reserve(me, "s-me", 200, LIMITS, now=t0 + timedelta(seconds=10))
        await heartbeat(other, far, now=t0 + timedelta(seconds=20))  # lease now runs to t0 + 50 s
        with pytest.raises(BudgetExceededError):
            await reserve(me, "s-me", 200, LIMITS, now=t0 + timedelta(seconds=45))
        # No heartbeat since: past its lease the hold no longer counts, even before any purge...
        late = t0 + timedelta(seconds=51)
        assert (await headroom(me, "s-me", LIMITS, now=late)).daily_pusd == 1000
        assert query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 1
        # ...and the next reserve purges it with its instance (its hold had 10 minutes to run).
        await reserve(me, "s-me", 200, LIMITS, now=late)
        assert [tuple(r) for r in query(db, "SELECT session_id, amount_pusd FROM reservations")] == [("s-me", 200)]
        assert {r["id"] for r in query(db, "SELECT id FROM server_instances")} == {me.instance.id}  # type: ignore[union-attr]
    finally:
        await other.close()
        await me.close()


async def test_a_reserve_between_heartbeats_reads_its_instance_and_renews_it_only_late(tmp_path: Path) -> None:
    # The heartbeat renews a lease every third of it; a reserve in between only checks the row is
    # there (no page of server_instances rewritten under the write lock), one later renews it, and
    # one whose instance another server purged registers it again before holding anything.
    db, t0 = tmp_path / "ledger.db", w.utcnow()
    me = await _ledger(db, Instance.new(lease_s=30), t0)
    assert me.instance is not None
    beat = query(db, "SELECT heartbeat_at, lease_until FROM server_instances")[0]
    try:
        await reserve(me, "s-me", 100, LIMITS, now=t0 + timedelta(seconds=9))
        assert tuple(query(db, "SELECT heartbeat_at, lease_until FROM server_instances")[0]) == tuple(beat)
        await reserve(me, "s-me", 100, LIMITS, now=t0 + timedelta(seconds=11))  # past a third: renewed
        renewed = query(db, "SELECT heartbeat_at, lease_until FROM server_instances")[0]
        assert renewed["heartbeat_at"] == w.iso(t0 + timedelta(seconds=11))
        assert renewed["lease_until"] == w.iso(t0 + timedelta(seconds=41))
        await heartbeat(me, me.instance, now=t0 + timedelta(seconds=12))
        with sqlite3.connect(db) as other:  # another server purges the instance as dead
            other.execute("DELETE FROM server_instances")
        await reserve(me, "s-me", 100, LIMITS, now=t0 + timedelta(seconds=13))
        assert [r["id"] for r in query(db, "SELECT id FROM server_instances")] == [me.instance.id]
        live = query(db, "SELECT COUNT(*) AS n FROM reservations WHERE instance_id = ?", me.instance.id)
        assert live[0]["n"] == 3
        with pytest.raises(BudgetExceededError):  # every hold counts: the instance is registered again
            await reserve(me, "s-me", 701, LIMITS, now=t0 + timedelta(seconds=14))
    finally:
        await me.close()


async def test_a_dead_pid_frees_holds_at_once_only_on_its_own_host(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    local = Instance("i_local", host_id(), child.pid, 30)
    remote = Instance("i_remote", "another-machine", child.pid, 30)  # the same number means nothing there
    a, b = await _ledger(db, local), await _ledger(db, remote)
    me = await _ledger(db, Instance.new(lease_s=30))
    try:
        await reserve(a, "s-a", 400, LIMITS)
        await reserve(b, "s-b", 400, LIMITS)
        child.kill()
        child.wait(timeout=10)
        await reserve(me, "s-me", 500, LIMITS)  # fits only because the local dead pid's 400 is gone
        held = {r["session_id"] for r in query(db, "SELECT session_id FROM reservations")}
        assert held == {"s-b", "s-me"}
        with pytest.raises(BudgetExceededError):
            await reserve(me, "s-me", 200, LIMITS)  # the remote hold still counts: its lease is fresh
    finally:
        child.kill()
        for led in (a, b, me):
            await led.close()


async def test_the_background_heartbeat_keeps_holds_alive_past_the_lease(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    other, me = await Ledger.open(db), await _ledger(db, Instance.new(lease_s=30))
    try:
        async with kept_alive(other, lease_s=1, host="another-machine") as inst:
            assert other.instance == inst
            await reserve(other, "s-far", 900, LIMITS)
            await anyio.sleep(2.5)  # over twice the lease: only heartbeats keep it
            with pytest.raises(BudgetExceededError):
                await reserve(me, "s-me", 200, LIMITS)
        # A clean stop: its holds stop counting at once.
        assert cast(Any, other).instance is None  # (cast: mypy keeps the narrowing from above)
        await reserve(me, "s-me", 200, LIMITS)
        assert [r["session_id"] for r in query(db, "SELECT session_id FROM reservations")] == ["s-me"]
    finally:
        await other.close()
        await me.close()


@contextmanager
def _server(tmp_path: Path, url: str, name: str, lease_s: int, calls: list[dict[str, Any]]) -> Iterator[int]:
    """`offload serve` on stdio as another machine's replica (its own host id), sent `calls`; yields its pid."""
    env = {**server_env(tmp_path, url, f"s-{name}"), "OFFLOAD_HOST_ID": name, "OFFLOAD_LEASE_S": str(lease_s)}
    requests = [
        *handshake(name),
        *({"jsonrpc": "2.0", "id": 2 + i, "method": "tools/call", "params": c} for i, c in enumerate(calls)),
    ]
    with (tmp_path / f"{name}.log").open("wb") as err:
        proc = subprocess.Popen(
            [str(VENV_BIN / "offload"), "serve"], env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err
        )
    assert proc.stdin is not None
    proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    proc.stdin.flush()
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=15)
        proc.stdin.close()


def _wait_for(db: Path, sql: str, timeout_s: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db.exists():
            try:
                rows = query(db, sql)
            except Exception:  # the server has not migrated the file yet
                rows = []
            if rows:
                return rows
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {sql}")


async def test_a_killed_replicas_hold_stops_counting_within_its_lease(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    db, lease_s = tmp_path / "ledger.db", 2
    call = {"name": "routed_complete", "arguments": {"prompt": "Say hi", "tier": "cheap", "max_tokens": 50}}
    with running(faults="latency=8s") as emu, _server(tmp_path, emu.url, "replica-b", lease_s, [call]) as pid:
        held = _wait_for(db, "SELECT amount_pusd, instance_id FROM reservations")  # the call is in flight
        assert held[0]["instance_id"].startswith("i_")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        me = await _ledger(db, Instance.new(lease_s=30))
        try:
            limits = BudgetLimits(daily_pusd=int(held[0]["amount_pusd"]) + 100)
            with pytest.raises(BudgetExceededError):  # another host's pid says nothing: the lease still runs
                await reserve(me, "s-me", 200, limits)
            while True:
                try:
                    await reserve(me, "s-me", 200, limits)
                    break
                except BudgetExceededError:
                    assert time.monotonic() - killed < lease_s + 3, "the dead replica's hold outlived its lease"
                    await anyio.sleep(0.1)
            assert query(db, "SELECT COUNT(*) AS n FROM reservations WHERE session_id != 's-me'")[0]["n"] == 0
            assert query(db, "SELECT COUNT(*) AS n FROM server_instances WHERE host_id = 'replica-b'")[0]["n"] == 0
        finally:
            await me.close()


async def test_a_batch_claimed_by_a_killed_replica_is_collected_once_by_another(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    db, lease_s = tmp_path / "ledger.db", 2
    items = ["alpha", "beta", "gamma", "delta"]
    call = {"name": "batch_submit", "arguments": {"template": "Tag {item}", "items": items, "tier": "cheap"}}
    with running(faults="latency=1500ms", batch_delay_s=0.2) as emu:
        with _server(tmp_path, emu.url, "replica-a", lease_s, [call]) as pid:
            # Replica A polls its batch under a claim (each request takes 1.5 s): kill it while it holds one.
            claim = _wait_for(
                db,
                "SELECT batch_id, lease_owner FROM batch_parts WHERE state IN ('in_progress', 'ended')"
                " AND lease_owner IS NOT NULL",
            )
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        bid, dead_owner = claim[0]["batch_id"], claim[0]["lease_owner"]
        assert query(db, "SELECT lease_until FROM batch_parts")[0]["lease_until"] > w.iso(
            w.utcnow() + timedelta(seconds=60)
        )  # the claim itself would have held for two minutes
        b1 = make_settings(emu.url, session_id="b1", lease_s=lease_s)
        b2 = make_settings(emu.url, session_id="b2", lease_s=lease_s)
        async with open_state(b1) as s1, open_state(b2) as s2:
            if time.monotonic() - killed < lease_s - 0.5:
                assert await store.claim_due(s1.ledger) == []  # A's lease is still running

            async def collect(state: Any) -> None:
                while query(db, "SELECT state FROM batches WHERE id = ?", bid)[0]["state"] != "done":
                    await run_once(state)
                    await anyio.sleep(0.05)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(collect, s1)
                    tg.start_soon(collect, s2)
        took = time.monotonic() - killed
    assert took < 60, took  # taken over after A's lease, not the claim's 120 s
    rows = query(db, "SELECT request_key, cost_pusd FROM attempts WHERE batch_id = ?", bid)
    assert len(rows) == len(items) == len({r["request_key"] for r in rows})  # each item settled exactly once
    settled = query(db, "SELECT COUNT(*) AS n FROM batch_items WHERE batch_id = ? AND result_type = 'succeeded'", bid)
    assert settled[0]["n"] == len(items)
    assert query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
    assert dead_owner not in {r["id"] for r in query(db, "SELECT id FROM server_instances")}


async def test_statusline_and_dashboard_stop_counting_a_dead_instances_hold(tmp_path: Path) -> None:
    db, t0, usd = tmp_path / "ledger.db", w.utcnow(), 10**12
    far = await _ledger(db, Instance.new(lease_s=30, host="another-machine"), t0)
    try:
        limits = BudgetLimits(daily_pusd=usd)
        await record_policy(far, "s-far", "team", limits)
        await reserve(far, "s-far", 60 * usd // 100, limits, now=t0)
    finally:
        await far.close()
    for at, left, held in (
        (t0 + timedelta(seconds=10), "$0.40 left", 60 * usd // 100),
        (t0 + timedelta(seconds=51), "$1.00 left", 0),
    ):
        assert left in read_statusline(db, at)
        with reading(db) as conn:
            assert conn is not None
            daily = {b.scope: b for b in dashboard_budgets(conn, at)[2]}["daily"]
        assert daily.reserved_pusd == held
