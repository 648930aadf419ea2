"""`offload ledger migrate SRC DST`: move a SQLite ledger's history into another ledger (PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from offload.config.settings import ledger_location
from offload.core.money import fmt_usd
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.transfer import TableReport, migrate


async def _run(source: Path, target: str) -> list[TableReport]:
    db_path, db_url = ledger_location(target, os.environ)
    ledger = await Ledger.open(db_url or db_path, spool=db_path)
    try:
        return await migrate(source, ledger)
    finally:
        await ledger.close()


def _line(r: TableReport) -> str:
    money = "".join(f"; {col} {fmt_usd(a)} = {fmt_usd(b)} ({a} = {b} pusd)" for col, a, b in r.money)
    mark = "ok" if r.ok else "MISMATCH"
    return f"{mark:8} {r.table}: {r.source_rows} rows, {r.found_rows} there, {r.inserted} new{money}"


def cmd_migrate(source: str, target: str) -> int:
    reports = anyio.run(_run, Path(source).expanduser(), target)
    for r in reports:
        print(_line(r))
    if all(r.ok for r in reports):
        print(f"every row and every picodollar of {source} is in the target ledger")
        return 0
    print("the target ledger is missing rows or money listed above as MISMATCH")
    return 1
