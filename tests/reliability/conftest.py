"""Helpers shared by the reliability tests: raw ledger reads and the tool-error contract."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from helpers import query

# A crash inside a tool reaches the model only as this bare prefix (possibly nested): the SDK
# hides the cause. A deliberate error keeps its own text after the prefix.
_GENERIC = re.compile(r"^(?:\s*Error executing tool [\w-]+:?\s*)+$")


def result_text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def is_generic_error(text: str) -> bool:
    """True when an error result tells the model nothing it can act on."""
    return not text.strip() or _GENERIC.match(text) is not None


def ledger_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    return query(db, sql, *params)
