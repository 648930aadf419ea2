"""`AppState`: what every service receives, and `open_state`, which opens and closes it.

It sits below the services and above infra and config, so services depend on it without
knowing about `mcp`; the MCP layer hands it to them from its lifespan.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from offload.config.policy import PolicyHolder
from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.baseline_cache import BaselineCache
from offload.core.errors import LedgerUnavailableError
from offload.core.pricing import PriceTable
from offload.core.recall import Recall
from offload.infra.claude import ClaudeClient
from offload.infra.detached import Detached
from offload.infra.ledger import batches, handles, instances, prefixes
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import record_policy_snapshot
from offload.infra.ledger.windows import utcnow
from offload.policy.models import Policy

REDO_MAX_BYTES = 32_000_000
log = logging.getLogger("offload")


@dataclass
class AppState:
    """The resources every tool call shares: settings, ledger, prices, the live policy, the API client."""

    settings: Settings
    ledger: Ledger
    prices: PriceTable
    policies: PolicyHolder
    _claude: ClaudeClient | None = None
    recall: Recall[Any] | None = None  # recent requests for `redo_of`, in memory only
    _rng: random.Random | None = field(default=None, repr=False)
    # The prompt cache the baseline model would have had: savings are measured against it.
    baseline_cache: BaselineCache = field(default_factory=BaselineCache)
    # count_tokens answers by request content hash: the same large files are counted once.
    token_counts: dict[str, int] = field(default_factory=dict)
    # When a prompt prefix is used, for cache placement (a bench moves it with the emulator's clock).
    clock: Callable[[], datetime] = field(default=utcnow, repr=False)
    # Paid calls run here, so a host's cancel never loses an answer the API billed.
    detached: Detached = field(default_factory=Detached, repr=False)

    def __post_init__(self) -> None:
        if self.recall is None:
            self.recall = Recall(
                time.monotonic,
                max_items=self.settings.redo_max_items,
                max_bytes=REDO_MAX_BYTES,
                max_age_s=self.settings.redo_ttl_s,
            )

    def rng(self) -> random.Random:
        """Exploration draws: seeded by the policy's `learning.seed` when it sets one."""
        if self._rng is None:
            self._rng = random.Random(self.policy.learning.seed)
        return self._rng

    @property
    def policy(self) -> Policy:
        return self.policies.current

    async def refresh_policy(self) -> None:
        """Pick up an edited policy file before the call; a broken edit keeps the last good one."""
        if self.policies.check_reload():
            await self.note_policy()

    async def note_policy(self) -> None:
        """Record the active policy's budgets, so `offload statusline` shows them without YAML."""
        await record_policy_snapshot(self.ledger, self.policy, str(self.policies.path), self.settings.session_id)

    def claude(self) -> ClaudeClient:
        """The API client, created on first use so the server starts (and lists tools) without a key."""
        if self._claude is None:
            self._claude = ClaudeClient.from_settings(self.settings)
        return self._claude

    async def aclose(self) -> None:
        if self._claude is not None:
            await self._claude.close()
            self._claude = None


@asynccontextmanager
async def open_state(settings: Settings) -> AsyncIterator[AppState]:
    """Open everything a server (or the demo, or a test) needs, and close it all on the way out."""
    prices = load_prices(overlay=settings.pricing_path)
    policies = PolicyHolder(settings.policy_path, known_models=prices.models)
    async with AsyncExitStack() as stack:
        ledger = await Ledger.open(
            settings.ledger_target, project=settings.project, user=settings.user, spool=settings.db_path
        )
        stack.push_async_callback(ledger.close)
        # Holds and batch claims of this server live as long as its heartbeat does, on any host.
        await stack.enter_async_context(instances.kept_alive(ledger, settings.lease_s, settings.host_id))
        state = AppState(settings=settings, ledger=ledger, prices=prices, policies=policies)
        stack.push_async_callback(state.aclose)
        # Exits before the client and the ledger close: calls in flight are recorded first.
        await stack.enter_async_context(state.detached.open())
        try:
            await state.note_policy()
            await _apply_retention(ledger)
        except LedgerUnavailableError as exc:
            # A full or locked ledger must not keep the server from starting: calls then fail
            # clearly at their reservation, and paid answers go to the journal.
            log.warning("ledger housekeeping skipped at start: %s", exc)
        yield state


async def _apply_retention(ledger: Ledger) -> None:
    """Forget stored payloads past their use: trim originals after a week unused, batch prompts
    and answers 29 days after settling (as the API does). Spend rows are never deleted."""
    await handles.prune(ledger)
    await batches.forget_payloads(ledger)
    await prefixes.prune(ledger)
