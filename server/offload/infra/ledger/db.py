"""The ledger's store: a SQLite file (the default) or a PostgreSQL database (`postgresql://...`).

Both backends offer the same seam: `Ledger.open`, `ledger.conn` for reads, `ledger.write()` for
one write transaction that holds the ledger's single write lock. PostgreSQL lives in pg.py;
the rest of this module is SQLite.

Every process (one per Claude Code session) opens the same file. WAL lets readers run beside
the single writer; `BEGIN IMMEDIATE` takes the write lock up front, which is what makes a
budget check-and-reserve atomic across processes. busy_timeout turns lock contention into
waiting instead of errors.

Reads outside a write transaction go to a second connection and are fetched whole in one
step. On a shared connection an open SELECT is an open read transaction: a `BEGIN IMMEDIATE`
started on it while another process has written must upgrade a stale snapshot, and SQLite
answers SQLITE_BUSY at once without waiting (that lost paid answers under concurrency).
A BUSY that still gets through is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from offload.config.settings import pg_spool_path
from offload.core.errors import ConfigError, LedgerUnavailableError
from offload.infra.ledger import journal, pg
from offload.infra.ledger.lite import BUSY_TIMEOUT_MS, Cursor, LiteConn, is_busy
from offload.infra.ledger.migrations import migrations as dialect_migrations
from offload.infra.ledger.statusline import ro_uri

if TYPE_CHECKING:
    from offload.infra.ledger.instances import Instance

log = logging.getLogger("offload.ledger")

# After busy_timeout, BEGIN IMMEDIATE is retried this many times with growing, jittered sleeps.
BUSY_RETRIES = 8
BUSY_BACKOFF_S = 0.05
# SQLite checkpoints the WAL itself, inside the COMMIT that crosses 1,000 pages: on the event
# loop (an inline transaction) that is a few milliseconds every ~150 settled calls. Checkpointing
# on a thread instead was tried and dropped: under steady writes from two processes a checkpoint
# never caught up with the WAL's end, so the WAL never restarted (gigabytes in a minute). Once a
# burst has passed, a WAL that grew is cut back to this size.
WAL_KEEP_BYTES = 16 * 1024 * 1024


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in ledger/schema, in order."""
    return dialect_migrations("schema")


class ReadConn:
    """The read connection: every `execute` runs and fetches in one step, on its worker thread
    or, with `inline=True` (a small indexed read on the hot path), on the event loop."""

    def __init__(self, conn: LiteConn) -> None:
        self._conn = conn
        # One statement at a time: an inline read must not run while a threaded one is using the connection.
        self._lock = asyncio.Lock()

    async def execute(self, sql: str, parameters: Iterable[Any] = (), *, inline: bool = False) -> Cursor:
        params = tuple(parameters)
        for attempt in range(BUSY_RETRIES + 1):
            try:
                async with self._lock:
                    self._conn.inline = inline
                    try:
                        return await self._conn.execute(sql, params)
                    finally:
                        self._conn.inline = False
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or attempt == BUSY_RETRIES:
                    raise
                await asyncio.sleep(_backoff(attempt))
        raise AssertionError("unreachable")

    async def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] = (), *, inline: bool = False
    ) -> list[sqlite3.Row]:
        """One round trip, so read helpers take either connection."""
        return await (await self.execute(sql, parameters, inline=inline)).fetchall()

    async def close(self) -> None:
        async with self._lock:  # not while a read is using it: closing under a statement crashed
            await self._conn.close()


class QuickRead:
    """`ledger.quick`: reads of a few indexed rows on the hot path, run on the event loop (lite.py)
    instead of a hop to the read connection's thread. A read that grows with the ledger belongs on
    `ledger.conn`."""

    def __init__(self, conn: ReadConn) -> None:
        self._conn = conn

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> Cursor:
        return await self._conn.execute(sql, parameters, inline=True)

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return await self._conn.execute_fetchall(sql, parameters, inline=True)


# A row as the ledger's reads return it (by name or index); PostgreSQL's pg.Row reads alike.
Row = sqlite3.Row
# What read helpers accept: the read connection, or the write connection inside `Ledger.write()`.
Conn = LiteConn | ReadConn | QuickRead | pg.Conn
# The connection `Ledger.write()` yields, for code that adds writes to a transaction it is handed.
WriteConn = LiteConn
# More writes that belong in a transaction someone else opens (an answer's calls row in its record,
# a kept-out row with its handle): one commit and one write lock, not one per table.
Also = Callable[[WriteConn], Awaitable[None]]


def _backoff(attempt: int) -> float:
    return float(BUSY_BACKOFF_S * (2 ** min(attempt, 6)) * (0.5 + random.random()))


async def _connect(path: Path, busy_timeout_ms: int) -> LiteConn:
    conn = await LiteConn.connect(str(path), busy_timeout_ms=busy_timeout_ms)
    try:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute(f"PRAGMA journal_size_limit = {WAL_KEEP_BYTES}")
        await conn.execute("PRAGMA foreign_keys = ON")
        # Forgotten payloads (retention) are zeroed in place, not left readable in free pages.
        await conn.execute("PRAGMA secure_delete = FAST")
    except BaseException:
        await conn.close()
        raise
    return conn


class Ledger:
    """The ledger file: a write connection (under `write()`) and a read connection (`conn`).

    Use `Ledger.open(path)`.
    """

    def __init__(
        self,
        wconn: LiteConn | pg.Conn,
        rconn: LiteConn | pg.Conn,
        path: Path,
        *,
        busy_retries: int = BUSY_RETRIES,
        url: str | None = None,
    ) -> None:
        # Exactly one of the two write connections is set: SQLite's, or PostgreSQL's (`_pg`).
        self._pg = wconn if isinstance(wconn, pg.Conn) else None
        self.wconn = cast(LiteConn, None) if isinstance(wconn, pg.Conn) else wconn
        self.conn: ReadConn | pg.Conn = rconn if isinstance(rconn, pg.Conn) else ReadConn(rconn)
        self.quick: QuickRead | pg.Conn = self.conn if isinstance(self.conn, pg.Conn) else QuickRead(self.conn)
        # SQLite: the ledger file. PostgreSQL: where this host spools answers the database could
        # not take (journal.py), since a shared database has no file beside it.
        self.path = path
        self.url = url  # the postgresql:// URL, None for SQLite
        self._lock_timeout_ms = BUSY_TIMEOUT_MS
        # Written on every attempt this process records (see records.py); set by `open`.
        self.project: str | None = None
        self.user: str | None = None
        # The server instance whose lease keeps this connection's holds and claims alive (instances.py);
        # None: holds are freed only by expiry and, on this host, by pid.
        self.instance: Instance | None = None
        self.busy_retries = busy_retries
        # One connection is shared by every task of the process; without this lock a second
        # task's BEGIN IMMEDIATE would fail with "cannot start a transaction within a transaction".
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        project: str | None = None,
        user: str | None = None,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        busy_retries: int = BUSY_RETRIES,
        spool: Path | None = None,
    ) -> Ledger:
        """Open (creating and migrating) the ledger; a path that cannot hold one is a `ConfigError` naming it.

        `path` is a SQLite file, or a `postgresql://` URL (then `spool` is the local journal's
        anchor; by default one per URL in the user data directory).
        `project` and `user` are recorded on every attempt written through this connection.
        """
        if pg.is_url(path):
            url = str(path)
            ledger = await cls._open_pg(url, spool or pg_spool_path(url, os.environ), busy_timeout_ms)
            ledger.project, ledger.user = project, user
            return ledger
        path = Path(path)
        try:
            ledger = await cls._open(path, busy_timeout_ms, busy_retries)
            ledger.project, ledger.user = project, user
            return ledger
        except FileExistsError:  # mkdir(exist_ok=True) says only this when a parent is a file
            reason = f"{path.parent} is not a directory"
        except OSError as exc:
            reason = exc.strerror or str(exc)
        except sqlite3.Error as exc:  # sqlite's own messages never name the file
            reason = str(exc)
        raise ConfigError(
            f"ledger {path}: cannot open or write it ({reason}); set OFFLOAD_DB or --db to a writable file"
        )

    @classmethod
    async def _open(cls, path: Path, busy_timeout_ms: int, busy_retries: int) -> Ledger:
        path.parent.mkdir(parents=True, exist_ok=True)
        wconn = await _connect(path, busy_timeout_ms)
        try:
            rconn = await _connect(path, busy_timeout_ms)
        except BaseException:
            await wconn.close()
            raise
        ledger = cls(wconn, rconn, path, busy_retries=busy_retries)
        try:
            await ledger._migrate()
        except BaseException:
            await ledger.close()
            raise
        try:
            await journal.replay(ledger)
        except (LedgerUnavailableError, OSError) as exc:  # still full or locked: the next open tries again
            log.warning("ledger journal not replayed yet: %s", exc)
        return ledger

    @classmethod
    async def _open_pg(cls, url: str, spool: Path, lock_timeout_ms: int) -> Ledger:
        wconn = await pg.connect(url, lock_timeout_ms=lock_timeout_ms)
        try:
            rconn = pg.ReadConn((await pg.connect(url)).raw, url)
        except BaseException:
            await wconn.close()
            raise
        with contextlib.suppress(OSError):  # a read-only home: spooling, if ever needed, reports it then
            spool.parent.mkdir(parents=True, exist_ok=True)
        ledger = cls(wconn, rconn, spool, url=url)
        ledger._lock_timeout_ms = lock_timeout_ms
        try:
            await pg.migrate(wconn)
        except BaseException:
            await ledger.close()
            raise
        try:
            await journal.replay(ledger)
        except (LedgerUnavailableError, OSError) as exc:
            log.warning("ledger journal not replayed yet: %s", exc)
        return ledger

    async def close(self) -> None:
        # Each connection closes when no task is using it: sqlite3 closed under a running
        # statement (an inline one on the loop, the close on the thread) crashed the process.
        try:
            await self.conn.close()
        finally:
            async with self._write_lock:
                await (self._pg or self.wconn).close()

    @asynccontextmanager
    async def write(self, *, inline: bool = False) -> AsyncIterator[WriteConn]:
        """An IMMEDIATE transaction: holds the database write lock from its first statement.

        `inline`: a transaction of a few indexed statements (a reserve, a record) runs them on the
        event loop instead of the database thread (lite.py); waiting for another process's lock
        never blocks the loop. Leave it off for anything whose size grows with the data.
        """
        async with self._write_lock:
            if self._pg is not None:
                async with self._pg_write(self._pg) as conn:
                    yield conn
                return
            self.wconn.inline = inline
            try:
                async with self._sqlite_write() as conn:
                    yield conn
            finally:
                self.wconn.inline = False

    @asynccontextmanager
    async def _sqlite_write(self) -> AsyncIterator[WriteConn]:
        try:
            await self._begin()
            yield self.wconn
        except BaseException as exc:
            # Also when cancelled while the thread's BEGIN got the lock: it is given back.
            if self.wconn.in_transaction:
                await self.wconn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._unavailable(exc) from exc
            raise
        else:
            try:
                await self._commit()
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc

    @asynccontextmanager
    async def _pg_write(self, wconn: pg.Conn) -> AsyncIterator[WriteConn]:
        lost = pg.errors()
        try:
            for attempt in range(2):
                if wconn.broken:  # the server restarted or the network dropped: one fresh connection
                    self._pg = wconn = await pg.connect(cast(str, self.url), lock_timeout_ms=self._lock_timeout_ms)
                started = False
                try:
                    async with pg.transaction(wconn) as conn:
                        started = True
                        # pg.Conn offers what the ledger modules call on the SQLite connection (execute,
                        # executemany, cursors with fetchone/fetchall/rowcount), which they are typed against.
                        yield cast(WriteConn, conn)
                    return
                except lost:
                    # Lost before the transaction began (a connection that died while idle): nothing
                    # was written, so begin once more on a fresh one. Lost later: the caller decides.
                    if started or attempt or not wconn.broken:
                        raise
        except lost as exc:
            raise LedgerUnavailableError(
                f"the ledger {pg.redact(cast(str, self.url))} could not be written ({str(exc).strip()}); "
                "nothing new was charged to it. Check that PostgreSQL is reachable, then call again"
            ) from exc
        except ConfigError as exc:  # the reconnect failed
            raise LedgerUnavailableError(f"{exc}; nothing new was charged to it") from exc

    def _unavailable(self, exc: sqlite3.OperationalError) -> LedgerUnavailableError:
        why = "locked by other processes past every retry" if is_busy(exc) else str(exc)
        return LedgerUnavailableError(
            f"the ledger {self.path.name} could not be written ({why}); nothing new was charged to it. "
            "Free disk space or wait for other offload processes, then call again"
        )

    async def _begin(self) -> None:
        for attempt in range(self.busy_retries + 1):
            try:
                await self.wconn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or attempt == self.busy_retries:
                    raise
            await asyncio.sleep(_backoff(attempt))

    async def _commit(self) -> None:
        try:
            await self.wconn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full) leaves the transaction open: end it so the next write can begin.
            if self.wconn.in_transaction:
                await self.wconn.execute("ROLLBACK")
            raise

    async def _migrate(self) -> None:
        async with self.write() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            rows = await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()
            done = {int(r[0]) for r in rows}
            for version, name, sql in migrations():
                if version in done:
                    continue
                # executescript would COMMIT our transaction; run statements one by one instead.
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at)"
                    " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                    (version, name),
                )


def _split_sql(script: str) -> list[str]:
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


async def probe(target: Path | str, *, timeout_s: int = 3) -> str | None:
    """None when the ledger at `target` can be reached and read (or, a file not made yet, created);
    otherwise why not, for the server's log (it may name hosts and paths: not for anonymous callers)."""
    try:
        if pg.is_url(target):
            conn = await pg.connect(str(target), timeout_s=timeout_s)
            try:
                await conn.execute("SELECT COUNT(*) FROM schema_migrations")
            finally:
                await conn.close()
            return None
        path = Path(target)
        if not path.exists():
            parent = next((p for p in path.parents if p.exists()), Path("/"))
            return None if os.access(parent, os.W_OK) else f"{parent} is not writable"
        lite = await LiteConn.connect(ro_uri(path), uri=True, busy_timeout_ms=timeout_s * 1000)
        try:
            await lite.execute_fetchall("SELECT COUNT(*) FROM sqlite_master")
        finally:
            await lite.close()
        return None
    except (ConfigError, sqlite3.Error, OSError) as exc:
        return str(exc)
    except Exception as exc:  # psycopg's errors, whose module SQLite users need not have
        if type(exc).__module__.startswith("psycopg"):
            return str(exc).strip()
        raise
