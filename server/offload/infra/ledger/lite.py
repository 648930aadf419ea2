"""One SQLite connection, driven from asyncio: each statement runs on the connection's own worker
thread, or, for short transactions, on the event loop itself.

A hand-off to a worker thread and back costs 25-30 us on an idle core and far more when other
processes share the CPU (the thread waits to be scheduled, then the loop does), while the
indexed statements of a reserve or a record take a few microseconds each. So a transaction
opened `inline` runs its statements on the loop, in the caller's own turn: a routed call's
ledger work no longer waits for any other thread. Waiting never blocks the loop: an inline
`BEGIN IMMEDIATE` tries without waiting (busy_timeout 0) and, while another process holds the
write lock, tries again after short asyncio sleeps until the busy_timeout. Bulk work (a
100k-item batch, a retention purge, a migration) stays on the thread so it cannot stall the
loop; there SQLite's own busy handler waits, in steps.

Rows are fetched whole when a statement runs, so no statement (and no read transaction) is left
open between awaits. A statement handed to the thread always finishes before the connection is
used again, even when its caller is cancelled: the connection is never used from two threads at
once, and a cancelled BEGIN that got the lock is rolled back by the transaction's own cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

T = TypeVar("T")

# How long a statement waits for another process's write lock before SQLite answers SQLITE_BUSY.
BUSY_TIMEOUT_MS = 30_000
# The longest one wait on the thread lasts before the caller may be let go (see LiteConn._run).
WAIT_STEP_MS = 100


def _pauses() -> Iterator[float]:
    """Seconds between tries for a lock another process holds: short at first (a reserve or a
    record holds it for a tenth of a millisecond), then longer, jittered so waiters spread out."""
    yield 0.0
    for base in (0.001, 0.001, 0.002, 0.003, 0.005):
        yield base * (0.5 + random.random())
    while True:
        yield 0.008 * (0.5 + random.random())


class Cursor:
    """A finished statement: its rows, rowcount and lastrowid, as the ledger modules read them."""

    __slots__ = ("_rows", "lastrowid", "rowcount")

    def __init__(self, rows: list[sqlite3.Row], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    async def fetchone(self) -> sqlite3.Row | None:
        return self._rows[0] if self._rows else None

    async def fetchall(self) -> list[sqlite3.Row]:
        return self._rows

    async def close(self) -> None:
        return None


def _execute(raw: sqlite3.Connection, sql: str, parameters: tuple[Any, ...]) -> Cursor:
    cur = raw.execute(sql, parameters)
    try:
        return Cursor(cur.fetchall(), cur.rowcount, cur.lastrowid)
    finally:
        cur.close()


def _executemany(raw: sqlite3.Connection, sql: str, seq: list[tuple[Any, ...]]) -> Cursor:
    cur = raw.executemany(sql, seq)
    try:
        return Cursor([], cur.rowcount, None)
    finally:
        cur.close()


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock; worth waiting for."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))
    return "locked" in str(exc) or "busy" in str(exc)


class LiteConn:
    """A sqlite3 connection (autocommit mode, rows by name and index) with an async face.

    `inline` (set by the ledger for one transaction at a time) runs statements on the loop;
    otherwise they run on the connection's worker thread. Callers never use one connection from
    two tasks at once: the ledger's write lock (or, for reads, `ReadConn`'s lock) sees to it.
    """

    def __init__(self, raw: sqlite3.Connection, busy_timeout_ms: int, thread: ThreadPoolExecutor) -> None:
        self.raw = raw
        self.inline = False
        # How long a statement on the thread waits for another process's lock (set it here, not by
        # PRAGMA: inline statements switch the connection's own timeout to 0 and back to this).
        self.busy_timeout_ms = busy_timeout_ms
        self._set_ms = busy_timeout_ms  # the timeout set on the connection now: 0 while inline
        self._thread = thread

    @classmethod
    async def connect(cls, database: str, *, busy_timeout_ms: int, uri: bool = False) -> LiteConn:
        """Opened on the worker thread the connection keeps (opening may wait on the file system)."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offload-sqlite")
        try:
            raw = await asyncio.get_running_loop().run_in_executor(
                thread,
                lambda: sqlite3.connect(
                    database, isolation_level=None, check_same_thread=False, uri=uri, timeout=busy_timeout_ms / 1000
                ),
            )
        except BaseException:
            thread.shutdown(wait=False)
            raise
        raw.row_factory = sqlite3.Row  # sqlite3.connect's timeout set the busy_timeout
        return cls(raw, busy_timeout_ms, thread)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> Cursor:
        return await self._run(_execute, sql, tuple(parameters))

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return await (await self.execute(sql, parameters)).fetchall()

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> Cursor:
        return await self._run(_executemany, sql, [tuple(p) for p in seq])

    async def close(self) -> None:
        try:
            await self._in_thread(self.raw.close)
        finally:
            self._thread.shutdown(wait=False)

    async def _run(self, fn: Callable[[sqlite3.Connection, str, Any], T], sql: str, arg: Any) -> T:
        if self.inline:
            if self._set_ms:
                self.raw.execute("PRAGMA busy_timeout = 0")
                self._set_ms = 0
            deadline = time.monotonic() + self.busy_timeout_ms / 1000
            pauses = _pauses()
            while True:
                pause = next(pauses)
                try:
                    return fn(self.raw, sql, arg)
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc) or time.monotonic() + pause >= deadline:
                        raise
                # Another process has the lock (or is recovering the WAL): try again after a pause
                # in which the loop runs on and the process sleeps. A wait on the thread cost a
                # thread hop and a wake-up per poll, and eight processes contending for the lock
                # spent a third of their CPU on that.
                await asyncio.sleep(pause)
        # On the thread, the wait goes in steps: SQLite cannot be interrupted while it waits for a
        # lock, and a statement handed to the thread always runs to its end, so a cancelled caller
        # is let go within one step rather than after the whole busy_timeout.
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            step = max(1, min(WAIT_STEP_MS, int((deadline - time.monotonic()) * 1000)))
            try:
                result = await self._in_thread(functools.partial(self._step, fn, sql, arg, step))
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
                await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller stops waiting
                continue
            # The step was shielded: a cancel that came meanwhile lands here, so the transaction's
            # next statement is not run (write() rolls back what this one began).
            await anyio.lowlevel.checkpoint_if_cancelled()
            return result

    def _step(self, fn: Callable[[sqlite3.Connection, str, Any], T], sql: str, arg: Any, wait_ms: int) -> T:
        """On the thread: `fn`, waiting up to `wait_ms` for another process's lock."""
        if self._set_ms != wait_ms:
            self.raw.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
            self._set_ms = wait_ms
        return fn(self.raw, sql, arg)

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._thread, fn)
        try:
            # Shielded both ways (anyio's scopes, asyncio's task.cancel): the statement cannot be
            # stopped halfway, so it finishes before anyone uses the connection again, and a
            # transaction it began is then rolled back by the ledger's write().
            with anyio.CancelScope(shield=True):
                result = await asyncio.shield(future)
        except asyncio.CancelledError:
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # seen: the caller was cancelled, a busy step's error is moot
            raise
        return result
