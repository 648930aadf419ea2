"""`offload serve`: check everything the server needs before any transport starts.

A host (Claude Code, Claude Desktop) shows only "Failed to connect" and keeps stderr somewhere
the user rarely looks, so a start-up problem must be one line that names the file and the fix,
and it must come before stdio or HTTP is up: later, it would surface as a transport traceback.
"""

from __future__ import annotations

import asyncio
import sys

from offload.config.policy import load_policy
from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.errors import OffloadError
from offload.infra.ledger.db import Ledger

EXIT_CONFIG = 2


def one_line(exc: BaseException) -> str:
    """A multi-problem message (a policy with several bad fields) folded onto one line."""
    out = ""
    for part in (p.strip() for p in str(exc).splitlines()):
        if part:
            out += (" " if not out or out.endswith(":") else "; ") + part
    return out.strip()


def preflight(settings: Settings) -> None:
    """Load prices, the policy and the ledger exactly as the server will; raise `OffloadError` on the first problem."""
    prices = load_prices(overlay=settings.pricing_path)
    load_policy(settings.policy_path, known_models=prices.models)
    asyncio.run(_open_ledger(settings))


async def _open_ledger(settings: Settings) -> None:
    ledger = await Ledger.open(settings.ledger_target, spool=settings.db_path)
    await ledger.close()


def refuse(exc: OffloadError) -> int:
    print(f"offload serve: {one_line(exc)}", file=sys.stderr)
    return EXIT_CONFIG
