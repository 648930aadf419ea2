"""The PostgreSQL schema is the SQLite schema's twin: same migration versions, tables, columns and kinds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from offload.infra.ledger import db, pg
from offload.infra.ledger.db import Ledger
from pg_fixtures import new_database

pytestmark = pytest.mark.anyio

# Column kinds that must match: money and counts are integers on both sides (BIGINT on PostgreSQL).
_SQLITE_KIND = {"INTEGER": "int", "TEXT": "text", "BLOB": "bytes"}
_PG_KIND = {"bigint": "int", "integer": "int", "text": "text", "bytea": "bytes"}


def test_both_schema_folders_have_the_same_versions() -> None:
    assert [v for v, _, _ in pg.migrations()] == [v for v, _, _ in db.migrations()]


async def test_both_backends_have_the_same_tables_columns_and_kinds(tmp_path: Path, pg_server: str) -> None:
    lite = await Ledger.open(tmp_path / "l.db")
    await lite.close()
    url = new_database(pg_server)
    led = await Ledger.open(url, spool=tmp_path / "spool.db")
    await led.close()

    conn = sqlite3.connect(tmp_path / "l.db")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        sqlite_cols = {
            # table_xinfo: generated columns too (table_info leaves them out)
            (t, r[1], _SQLITE_KIND[r[2]])
            for t in tables
            for r in conn.execute(f"PRAGMA table_xinfo({t})").fetchall()
        }
    finally:
        conn.close()
    with psycopg.connect(url) as pconn:
        pg_cols = {
            (str(t), str(c), _PG_KIND[str(k)])
            for t, c, k in pconn.execute(
                "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
                " JOIN information_schema.tables t USING (table_schema, table_name)"
                " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
            ).fetchall()
        }
    assert len(sqlite_cols) > 90
    assert pg_cols == sqlite_cols
