"""The MCP server: construction (tools, instructions, lifespan) and the stdio transport."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server import MCPServer

from offload import __version__
from offload.config.settings import Settings
from offload.mcp import stdio
from offload.mcp.telemetry import otel_export
from offload.mcp.tools import build_tools
from offload.services.batches import collector
from offload.state import AppState, open_state

log = logging.getLogger("offload")

INSTRUCTIONS = (
    "offload runs sub-work on the cheapest adequate Claude tier, batches what can wait at half "
    "price, and trims bulky material before it reaches you. Pass file paths instead of pasting files. "
    "Pass difficulty when you know it. Judge each routed_complete answer: if it is wrong, call again "
    "with redo_of=<its call_id>."
)


def build_server(settings: Settings, **server_kwargs: Any) -> MCPServer[AppState]:
    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with open_state(settings) as state, collector(state), otel_export(state):
            yield state

    return MCPServer(
        "offload",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level="WARNING",
        tools=build_tools(),
        **server_kwargs,
    )


# Libraries that log every request at INFO: a line per API call in the host's log is noise, and
# formatting and writing it was work on every routed call's path.
QUIET_LOGGERS = ("httpx2", "httpcore2", "httpx", "httpcore")


def configure_logging() -> None:
    # stdout is the stdio protocol channel: every log line goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def serve_stdio(settings: Settings) -> int:
    configure_logging()
    server = build_server(settings)
    log.info("offload %s on stdio: session %s, ledger %s", __version__, settings.session_id, settings.db_path)
    backend_options = {"use_uvloop": True} if has_uvloop() else {}
    anyio.run(stdio.serve, server, backend_options=backend_options)
    return 0


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - platforms without uvloop wheels
        return False
    return True
