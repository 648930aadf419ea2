"""The ledger: the only place offload speaks SQL.

`db.Ledger` owns the file, migrations and the write transaction; sibling modules add the rest:

- `records`: `Attempt`, `record(ledger, attempt, reservation=None) -> bool` (idempotent on
  request_key; releases the reservation in the same transaction), `record_many`, `record_policy`.
- `budgets`: `BudgetLimits`, `reserve(...) -> Reservation`, `release`, `headroom(...) -> Headroom`,
  `warnings(spent, limits, warn_at)`.
- `reports`: `summary(...) -> BudgetSummary`, `spend_rows`, `read_spend` (printing is in `offload.cli.spend`).
- `statusline`: `statusline_text` (stdlib sqlite3 only, read-only; fast enough for every redraw).

Imports here are lazy so that `offload statusline` does not pay for aiosqlite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offload.infra.ledger.db import Ledger

__all__ = ["Ledger"]


def __getattr__(name: str) -> Any:
    if name == "Ledger":
        from offload.infra.ledger.db import Ledger

        return Ledger
    raise AttributeError(f"module 'offload.infra.ledger' has no attribute {name!r}")
