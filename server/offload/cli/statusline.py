"""`offload statusline`: one short line on every prompt redraw; it never fails the prompt.

Imports only the standard library and offload's light modules (no aiosqlite, rich, pydantic,
mcp or anthropic): it must start and finish in a few tens of milliseconds.
"""

from __future__ import annotations

import sys
from datetime import datetime

from offload.config.settings import Settings
from offload.infra.ledger import windows as w
from offload.infra.ledger.statusline import read_statusline


def cmd_statusline(settings: Settings, *, now: datetime | None = None) -> int:
    print(read_statusline(settings.db_path, now or w.utcnow()))
    sys.stdout.flush()
    return 0
