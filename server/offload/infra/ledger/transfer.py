"""`offload ledger migrate`: copy a SQLite ledger's whole history into another ledger, losslessly.

Every row of every ledger table is copied; rows already in the target are skipped by their key
(request_key, batch id, call id, handle id, ...), so a second run adds nothing. Tables whose rows
have no key but a row number (holds, policy snapshots, learning evidence, context savings) match
on every other column instead. Row numbers are the target's own: a batch's `reservation_id`
follows its hold to the id that hold got there. The check afterwards reads the target again:
each table's rows from the source and their money columns must all be there, to the picodollar.
The spend rollups (`spend_rollup`, `spend_by_day`) are not copied: they are derived from attempts,
and the target's triggers add each attempt copied there once (a skipped duplicate adds nothing).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offload.core.errors import InputError
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.statusline import open_ro


@dataclass(frozen=True)
class _Table:
    name: str
    key: tuple[str, ...]  # empty: no natural key; rows match on all columns but `id`
    money: tuple[str, ...] = ()


# Parents before children (batches' holds, then batches, then their parts and items).
TABLES = (
    _Table("attempts", ("request_key",), ("cost_pusd", "baseline_pusd", "cache_gain_pusd")),
    _Table("reservations", (), ("amount_pusd",)),
    _Table("policy_snapshots", ()),
    _Table("handles", ("id",)),
    _Table("batches", ("id",), ("worst_pusd", "typical_pusd", "sync_pusd")),
    _Table("batch_parts", ("batch_id", "part")),
    _Table("batch_items", ("batch_id", "idx"), ("worst_pusd", "cost_pusd")),
    _Table("calls", ("call_id",)),
    _Table("tier_evidence", ()),
    _Table("context_kept_out", ()),
)


@dataclass(frozen=True)
class TableReport:
    table: str
    source_rows: int
    found_rows: int  # the source's rows found in the target afterwards
    inserted: int
    money: tuple[tuple[str, int, int], ...]  # (column, source total, total of those rows in the target)

    @property
    def ok(self) -> bool:
        return self.found_rows == self.source_rows and all(a == b for _, a, b in self.money)


def _source_columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in src.execute(f"PRAGMA table_info({table})").fetchall()]


async def _target_rows(target: Ledger, table: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    rows = await (await target.conn.execute(f"SELECT {', '.join(columns)} FROM {table}")).fetchall()
    return [tuple(r) for r in rows]


async def _copy_table(src: sqlite3.Connection, target: Ledger, t: _Table, holds: dict[int, int]) -> TableReport | None:
    present = _source_columns(src, t.name)
    if not present:
        return None  # an older ledger without this table
    columns = [c for c in present if c != "id" or t.key == ("id",)]
    rows = [tuple(r) for r in src.execute(f"SELECT {', '.join(columns)} FROM {t.name} ORDER BY rowid").fetchall()]
    if t.name == "batches" and "reservation_id" in columns:
        at = columns.index("reservation_id")
        rows = [(*r[:at], None if r[at] is None else holds.get(r[at]), *r[at + 1 :]) for r in rows]
    before = len(await _target_rows(target, t.name, columns[:1]))
    insert = f"INSERT INTO {t.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    async with target.write() as conn:
        if t.key:
            await conn.executemany(insert + f" ON CONFLICT ({', '.join(t.key)}) DO NOTHING", rows)
        else:
            await _copy_unkeyed(conn, target, t, columns, rows, holds, src)
    return await _verify(src, target, t, columns, rows, before)


async def _copy_unkeyed(
    conn: Any,
    target: Ledger,
    t: _Table,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    holds: dict[int, int],
    src: sqlite3.Connection,
) -> None:
    # Already there: the same row (but its id) counted once per copy, so duplicates stay duplicates.
    there: dict[tuple[Any, ...], list[int]] = {}
    for r in await _target_rows(target, t.name, ["id", *columns]):
        there.setdefault(r[1:], []).append(int(r[0]))
    ids = [int(r[0]) for r in src.execute(f"SELECT id FROM {t.name} ORDER BY rowid").fetchall()]
    insert = f"INSERT INTO {t.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) RETURNING id"
    for old_id, row in zip(ids, rows, strict=True):
        same = there.get(row)
        if same:
            new_id = same.pop(0)
        else:
            got = await (await conn.execute(insert, row)).fetchone()
            new_id = int(got[0])
        if t.name == "reservations":  # the only row numbers anything refers to (batches.reservation_id)
            holds[old_id] = new_id


async def _verify(
    src: sqlite3.Connection, target: Ledger, t: _Table, columns: list[str], rows: list[tuple[Any, ...]], before: int
) -> TableReport:
    after = await _target_rows(target, t.name, columns)
    money = [c for c in t.money if c in columns]
    if t.key:
        at = [columns.index(k) for k in t.key]
        wanted = {tuple(r[i] for i in at) for r in rows}
        found = [r for r in after if tuple(r[i] for i in at) in wanted]
    else:
        left = Counter(rows)
        found = []
        for r in after:
            if left[r] > 0:
                left[r] -= 1
                found.append(r)
    totals = tuple(
        (c, sum(int(r[columns.index(c)] or 0) for r in rows), sum(int(r[columns.index(c)] or 0) for r in found))
        for c in money
    )
    return TableReport(t.name, len(rows), len(found), len(after) - before, totals)


async def migrate(source: Path, target: Ledger) -> list[TableReport]:
    """Copy every ledger table of the SQLite file `source` into `target`; one report per table."""
    if not source.is_file():
        raise InputError(f"{source}: no such ledger file; pass the SQLite ledger to copy (OFFLOAD_DB's file)")
    try:
        src = open_ro(source)
        src.execute("SELECT 1 FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{source} is not an offload ledger ({exc})") from None
    try:
        if not _source_columns(src, "attempts"):
            raise InputError(f"{source} is not an offload ledger (it has no attempts table)")
        holds: dict[int, int] = {}
        reports = []
        for t in TABLES:
            report = await _copy_table(src, target, t, holds)
            if report is not None:
                reports.append(report)
        return reports
    finally:
        src.close()
