"""The MCP server: construction, lifespan (the resources every tool shares) and transports."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from mcp.server import MCPServer

from offload import __version__
from offload.ledger import Ledger
from offload.settings import Settings

log = logging.getLogger("offload")

INSTRUCTIONS = (
    "offload runs sub-work on the cheapest adequate Claude tier, batches what can wait at half "
    "price, and trims bulky material before it reaches you. Pass file paths instead of pasting files."
)


@dataclass
class AppState:
    """What every tool call can reach through `ctx.request_context.lifespan_context`."""

    settings: Settings
    ledger: Ledger


def build_server(settings: Settings) -> MCPServer[AppState]:
    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        ledger = await Ledger.open(settings.db_path)
        try:
            yield AppState(settings=settings, ledger=ledger)
        finally:
            await ledger.close()

    server: MCPServer[AppState] = MCPServer(
        "offload", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan, log_level="WARNING"
    )
    from offload import tools

    tools.register(server)
    return server


def configure_logging() -> None:
    # stdout is the stdio protocol channel: every log line goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def serve(settings: Settings, *, http: str | None = None) -> int:
    configure_logging()
    server = build_server(settings)
    if http:
        from offload.http import serve_http

        return serve_http(server, settings, http)
    backend_options = {"use_uvloop": True} if _has_uvloop() else {}
    anyio.run(server.run_stdio_async, backend_options=backend_options)
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - platforms without uvloop wheels
        return False
    return True
