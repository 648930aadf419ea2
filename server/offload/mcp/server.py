"""The MCP server: construction, lifespan (the resources every tool shares) and transports."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server import MCPServer

from offload import __version__
from offload.config.policy import PolicyHolder
from offload.config.settings import Settings
from offload.core.pricing import PriceTable
from offload.infra.claude import ClaudeClient
from offload.infra.ledger import Ledger
from offload.policy.models import Policy

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

log = logging.getLogger("offload")

INSTRUCTIONS = (
    "offload runs sub-work on the cheapest adequate Claude tier, batches what can wait at half "
    "price, and trims bulky material before it reaches you. Pass file paths instead of pasting files."
)


@dataclass
class AppState:
    """What every tool call reaches through `ctx.request_context.lifespan_context`."""

    settings: Settings
    ledger: Ledger
    prices: PriceTable
    policies: PolicyHolder
    http: bool = False
    _claude: ClaudeClient | None = None

    @property
    def policy(self) -> Policy:
        return self.policies.current

    async def refresh_policy(self) -> None:
        """Pick up an edited policy file before the call; a broken edit keeps the last good one."""
        if self.policies.check_reload():
            await self.note_policy()

    async def note_policy(self) -> None:
        """Record the active policy's budgets, so `offload statusline` shows them without YAML."""
        from offload.infra.ledger.records import record_policy_snapshot

        await record_policy_snapshot(self.ledger, self.policy, str(self.policies.path), self.settings.session_id)

    def claude(self) -> ClaudeClient:
        """The API client, created on first use so the server starts (and lists tools) without a key."""
        if self._claude is None:
            self._claude = ClaudeClient.from_settings(self.settings)
        return self._claude

    def session_for(self, ctx: Context[Any, Any]) -> str:
        from offload.mcp.session import session_id

        return session_id(ctx, self)

    async def aclose(self) -> None:
        if self._claude is not None:
            await self._claude.close()
            self._claude = None


@asynccontextmanager
async def open_state(settings: Settings, *, http: bool = False) -> AsyncIterator[AppState]:
    """Open everything a server (or the demo, or a test) needs, and close it all on the way out."""
    prices = PriceTable.load()
    policies = PolicyHolder(settings.policy_path, known_models=prices.models)
    async with AsyncExitStack() as stack:
        ledger = await Ledger.open(settings.db_path)
        stack.push_async_callback(ledger.close)
        state = AppState(settings=settings, ledger=ledger, prices=prices, policies=policies, http=http)
        stack.push_async_callback(state.aclose)
        await state.note_policy()
        await _apply_retention(ledger)
        yield state


async def _apply_retention(ledger: Ledger) -> None:
    """Forget stored payloads past their use: trim originals after a week unused, batch prompts
    and answers 29 days after settling (as the API does). Spend rows are never deleted."""
    from offload.infra.ledger import batches, handles

    await handles.prune(ledger)
    await batches.forget_payloads(ledger)


def build_server(settings: Settings, *, http: bool = False, **server_kwargs: Any) -> MCPServer[AppState]:
    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        from offload.services.batches import collector

        async with open_state(settings, http=http) as state, collector(state):
            yield state

    from offload.mcp.tools import build_tools

    return MCPServer(
        "offload",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level="WARNING",
        tools=build_tools(),
        **server_kwargs,
    )


def configure_logging() -> None:
    # stdout is the stdio protocol channel: every log line goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def serve(settings: Settings, *, http: str | None = None) -> int:
    configure_logging()
    if http:
        from offload.mcp.http import serve_http

        return serve_http(settings, http)
    server = build_server(settings)
    log.info("offload %s on stdio: session %s, ledger %s", __version__, settings.session_id, settings.db_path)
    backend_options = {"use_uvloop": True} if _has_uvloop() else {}
    anyio.run(server.run_stdio_async, backend_options=backend_options)
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - platforms without uvloop wheels
        return False
    return True
