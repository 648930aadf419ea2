"""The ledger: the only place offload speaks SQL.

`db.Ledger` owns the file, migrations and the write transaction; sibling modules add the
records, reservations, reports, batches and handles on top of it.
"""

from offload.ledger.db import Ledger

__all__ = ["Ledger"]
