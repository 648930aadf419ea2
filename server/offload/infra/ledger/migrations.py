"""The append-only migration files of one dialect's schema folder (`schema` SQLite, `schema_pg` PostgreSQL)."""

from __future__ import annotations

import re
from importlib import resources

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations(folder: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in ledger/`folder`, in order. Files are append-only."""
    found = []
    for entry in resources.files("offload.infra.ledger").joinpath(folder).iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in ledger/{folder}: {versions}")
    return found
