"""The SQLite file: opening, pragmas, migrations, and the write transaction.

Every process (one per Claude Code session) opens the same file. WAL lets readers run beside
the single writer; `BEGIN IMMEDIATE` takes the write lock up front, which is what makes a
budget check-and-reserve atomic across processes. busy_timeout turns lock contention into
waiting instead of errors.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import aiosqlite

from offload.core.errors import ConfigError

BUSY_TIMEOUT_MS = 30_000
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in ledger/schema, in order. Files are append-only."""
    found = []
    for entry in resources.files("offload.infra.ledger").joinpath("schema").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in ledger/schema: {versions}")
    return found


class Ledger:
    """One open connection to the ledger file. Use `Ledger.open(path)`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        # Written on every attempt this process records (see records.py); set by `open`.
        self.project: str | None = None
        self.user: str | None = None
        # One connection is shared by every task of the process; without this lock a second
        # task's BEGIN IMMEDIATE would fail with "cannot start a transaction within a transaction".
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str, *, project: str | None = None, user: str | None = None) -> Ledger:
        """Open (creating and migrating) the ledger; a path that cannot hold one is a `ConfigError` naming it.

        `project` and `user` are recorded on every attempt written through this connection.
        """
        path = Path(path)
        try:
            ledger = await cls._open(path)
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
    async def _open(cls, path: Path) -> Ledger:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Open it once with the stdlib first: when aiosqlite's connect fails, its worker thread
        # reports the failure after asyncio.run has closed the loop, a traceback after our one line.
        sqlite3.connect(path).close()
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            # Forgotten payloads (retention) are zeroed in place, not left readable in free pages.
            await conn.execute("PRAGMA secure_delete = FAST")
            ledger = cls(conn, path)
            await ledger._migrate()
        except BaseException:
            await conn.close()
            raise
        return ledger

    async def close(self) -> None:
        await self.conn.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """An IMMEDIATE transaction: holds the database write lock from its first statement."""
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            else:
                await self.conn.execute("COMMIT")

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
