"""The PostgreSQL backend: connections, the write transaction, migrations, and SQL translation.

The ledger modules write one SQL dialect (SQLite's, kept to what PostgreSQL also speaks); this
module adapts the few differences as each statement is sent: `?` placeholders become `%s`
(a literal `%` is doubled), and `x IS ?` becomes `x IS NOT DISTINCT FROM %s`, the NULL-safe
equality SQLite spells `IS`. Everything else the modules send is common SQL; the schema
differences live in schema_pg/ (same version numbers as schema/).

Atomic check-and-reserve across processes and machines: every write transaction first takes one
transaction-level advisory lock (`pg_advisory_xact_lock`), the same single-writer rule SQLite's
`BEGIN IMMEDIATE` gives. Reads run on a second, autocommit connection (READ COMMITTED), as the
SQLite read connection does. psycopg is imported when a PostgreSQL ledger is opened, so SQLite
users need no PostgreSQL package at all.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from offload.config.settings import is_pg_url
from offload.core.errors import ConfigError
from offload.infra.ledger.migrations import migrations as dialect_migrations

if TYPE_CHECKING:
    import psycopg

# The one advisory lock every write transaction takes (any fixed 64-bit number; 'offload' in ASCII).
WRITE_LOCK_KEY = 0x6F66666C6F6164
log = logging.getLogger("offload.ledger")
# A write transaction never waits on the network (the API call is outside it): one idle this long
# belongs to a stopped process, and PostgreSQL ends its session, freeing the lock.
IDLE_IN_WRITE_MS = 60_000
_IS_PARAM = re.compile(r"\bIS \?", re.IGNORECASE)


is_url = is_pg_url


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite-dialect SQL with `?` parameters into psycopg's `%s` form."""
    return _IS_PARAM.sub("IS NOT DISTINCT FROM ?", sql.replace("%", "%%")).replace("?", "%s")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in ledger/schema_pg, in order."""
    return dialect_migrations("schema_pg")


class Row(tuple[Any, ...]):
    """A result row read by position or by column name, like sqlite3.Row."""

    _index: dict[str, int]

    def __new__(cls, values: Iterable[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _plain(value: Any) -> Any:
    # SUM over bigint is numeric in PostgreSQL; money stays an int, as SQLite returns it.
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    return value


def _row_factory(cursor: Any) -> Any:
    index = {c.name: i for i, c in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> Row:
        return Row((_plain(v) for v in values), index)

    return make


class Cursor:
    """A finished statement's rows and rowcount: the part of lite.Cursor the ledger uses."""

    lastrowid = None  # PostgreSQL has none: the ledger asks with RETURNING instead

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    # Typed Any: callers hold these where they hold sqlite3.Row, which Row stands in for.
    async def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    async def fetchall(self) -> list[Any]:
        return self._rows

    async def close(self) -> None:
        return None


class Conn:
    """One psycopg connection speaking the ledger's dialect: `execute` runs and fetches in one step."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], url: str = "") -> None:
        self.raw = conn
        self.url = url

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> Cursor:
        async with self.raw.cursor() as cur:
            await cur.execute(translate(sql), tuple(parameters))
            rows = await cur.fetchall() if cur.description is not None else []
            return Cursor(rows, cur.rowcount)

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]:
        """One round trip, so read helpers take either backend's connection."""
        return await (await self.execute(sql, parameters)).fetchall()

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> Cursor:
        async with self.raw.cursor() as cur:
            await cur.executemany(translate(sql), [tuple(p) for p in seq])
            return Cursor([], cur.rowcount)

    async def close(self) -> None:
        await self.raw.close()

    @property
    def broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)


def driver() -> Any:
    """The psycopg module, or a ConfigError saying how to install it."""
    try:
        return importlib.import_module("psycopg")
    except ImportError:
        raise ConfigError(
            "a postgresql:// ledger needs psycopg: pip install 'offload-mcp[postgres]'; or set OFFLOAD_DB to a file"
        ) from None


async def connect(url: str, *, timeout_s: int | None = None, lock_timeout_ms: int | None = None) -> Conn:
    """An autocommit connection with name-and-index rows; `ConfigError` naming the URL if it fails.

    `lock_timeout_ms` bounds the wait for the write lock (SQLite's busy_timeout), and a session
    that sits idle inside a transaction (a frozen process) loses it, so the lock cannot be held
    forever by a client that stopped without its connection closing.
    """
    pg = driver()
    extra = {} if timeout_s is None else {"connect_timeout": timeout_s}
    try:
        raw = await pg.AsyncConnection.connect(url, autocommit=True, row_factory=_row_factory, **extra)
        if lock_timeout_ms is not None:
            await raw.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
            await raw.execute(f"SET idle_in_transaction_session_timeout = {int(IDLE_IN_WRITE_MS)}")
    except pg.Error as exc:
        raise _unreachable(url, exc) from None
    return Conn(raw, url)


def _unreachable(url: str, exc: BaseException) -> ConfigError:
    return ConfigError(f"ledger {redact(url)}: cannot connect ({str(exc).strip()}); check OFFLOAD_DB or --db")


class ReadConn(Conn):
    """The read connection: a statement that finds it dropped (a server restart, a failover, an
    idle timeout) runs once more on a fresh one. Reads are autocommit, so repeating one is safe."""

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> Cursor:
        params = tuple(parameters)
        try:
            return await super().execute(sql, params)
        except errors() as exc:
            if not self.broken:
                raise
            log.info("ledger read connection lost (%s); reconnecting", str(exc).strip())
        self.raw = (await connect(self.url)).raw
        return await super().execute(sql, params)


class SyncCursor:
    """A finished statement on a synchronous connection, shaped like sqlite3's cursor for the CLI's reads."""

    def __init__(self, rows: list[Row], description: list[tuple[str]], rowcount: int = -1) -> None:
        self._rows = rows
        self.description = description
        self.rowcount = rowcount

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class SyncConn:
    """A synchronous, read-only use of the ledger for CLI reports (no event loop to pay for)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Iterable[Any] = ()) -> SyncCursor:
        with self.raw.cursor() as cur:
            cur.execute(translate(sql), tuple(parameters))
            if cur.description is None:
                return SyncCursor([], [], cur.rowcount)
            return SyncCursor(cur.fetchall(), [(c.name,) for c in cur.description], cur.rowcount)

    @contextmanager
    def write(self) -> Iterator[SyncConn]:
        """A transaction under the ledger's write lock, for the CLI's rare maintenance writes."""
        with self.raw.transaction():
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            yield self

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> SyncConn:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def connect_sync(url: str, *, timeout_s: int = 10) -> SyncConn:
    """A synchronous autocommit connection for reports; `ConfigError` naming the URL if it fails."""
    pg = driver()
    try:
        raw = pg.Connection.connect(url, autocommit=True, row_factory=_row_factory, connect_timeout=timeout_s)
    except pg.Error as exc:
        raise _unreachable(url, exc) from None
    return SyncConn(raw)


@asynccontextmanager
async def transaction(conn: Conn) -> AsyncIterator[Conn]:
    """One write transaction under the ledger's single advisory lock; rolled back on any error."""
    async with conn.raw.transaction():
        await conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        yield conn


def errors() -> tuple[type[BaseException], ...]:
    """What a lost or refusing server raises: the ledger turns these into LedgerUnavailableError."""
    pg = driver()
    return (pg.OperationalError, pg.errors.AdminShutdown)


async def migrate(conn: Conn) -> None:
    """Apply every schema_pg migration not yet recorded, all under the write lock."""
    async with transaction(conn):
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {int(r[0]) for r in await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()}
        for version, name, sql in migrations():
            if version in done:
                continue
            # No parameters: psycopg sends the script as is, every statement in it.
            await conn.raw.execute(sql.encode("utf-8"))
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at)"
                " VALUES (?, ?, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))",
                (version, name),
            )
