"""The ledger: the only place offload speaks SQL.

`db.Ledger` owns the file, migrations and the write transaction; sibling modules add the rest:

- `records`: `Attempt`, `record(ledger, attempt, reservation=None) -> bool` (idempotent on
  request_key; releases the reservation in the same transaction), `record_many`, `record_policy`.
- `budgets`: `BudgetLimits`, `reserve(...) -> Reservation`, `release`, `headroom(...) -> Headroom`,
  `warnings(spent, limits, warn_at)`.
- `reports`: `summary(...) -> BudgetSummary`, `spend_rows`, `read_spend` (printing is in `offload.cli.spend`).
- `statusline`: `statusline_text` (stdlib sqlite3 only, read-only; fast enough for every redraw).

Import `Ledger` from `offload.infra.ledger.db`: this package's `__init__` imports nothing, so
`offload statusline` (stdlib sqlite3 only) does not pay for the async ledger and its imports.
"""
