"""Background collection: poll in-flight API batches, collect ended ones, settle spend once.

Runs inside every server process (see app.py's lifespan). Processes share the ledger, so a
part is polled or collected only under a lease taken in a write transaction; settlement is
idempotent anyway (see ledger/batches.py), the lease only avoids duplicate API traffic.
Polls back off from half a second to a few minutes: the first ones catch small batches
quickly, later ones cost little while a large batch takes hours.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio

from offload.core.errors import OffloadError
from offload.core.recall import new_call_id
from offload.infra.claude import BatchItemResult
from offload.infra.ledger import batches as store
from offload.infra.ledger import learning
from offload.infra.ledger import windows as w
from offload.infra.ledger.records import Attempt
from offload.services.batches import build, followup, quality

if TYPE_CHECKING:
    from offload.infra.ledger.db import Row
    from offload.state import AppState

log = logging.getLogger("offload.services.batches")

BACKOFF_S = (0.5, 1, 2, 4, 8, 15, 30, 60, 120)  # the last value repeats
IDLE_S = 2.0  # how often an idle collector looks for batches submitted by any process
SETTLE_CHUNK = 500
OUTCOMES = {"succeeded": "ok", "errored": "error", "expired": "expired", "canceled": "canceled"}


def backoff(polls: int) -> float:
    return float(BACKOFF_S[min(polls, len(BACKOFF_S) - 1)])


@asynccontextmanager
async def collector(state: AppState) -> AsyncIterator[None]:
    """Run `run_forever` for the lifetime of the server; cancelled cleanly on exit."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_forever, state)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


async def run_forever(state: AppState) -> None:
    if not state.settings.has_api_key:
        return  # nothing can be polled; submit refuses without a key too
    while True:
        try:
            worked = await run_once(state)
        except OffloadError as exc:
            log.warning("batch collector: %s", exc)
            worked = 0
        except Exception:  # a bug must not kill the server; it is logged and retried later
            log.exception("batch collector failed; retrying")
            worked = 0
        await anyio.sleep(0.05 if worked else IDLE_S / 4)


async def run_once(state: AppState) -> int:
    """Poll (and collect) every part that is due now, and start owed follow-up rounds; returns
    how many parts and rounds were handled."""
    worked = await followup.run_once(state)
    refs = await store.claim_due(state.ledger)
    for ref in refs:
        try:
            await _poll(state, ref)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                retry = w.utcnow() + timedelta(seconds=backoff(ref.polls))
                await store.release_lease(state.ledger, ref, retry_at=retry, error=str(exc)[:500] or None)
            if not isinstance(exc, OffloadError):
                raise
            log.warning("batch %s part %d: %s", ref.batch_id, ref.part, exc)
    return len(refs) + worked


async def _poll(state: AppState, ref: store.PartRef) -> None:
    assert ref.api_batch_id is not None
    client = state.claude()
    if ref.state != "ended":
        info = await client.batch_retrieve(ref.api_batch_id)
        ended = info.status == "ended"
        next_poll = w.utcnow() + timedelta(seconds=backoff(ref.polls + 1))
        await store.polled(state.ledger, ref, ended=ended, ended_at=info.ended_at, next_poll=next_poll)
        if not ended:
            return
        ref = store.PartRef(ref.batch_id, ref.part, ref.api_batch_id, "ended", ref.polls + 1)
        # The lease was released with the poll; take it again to collect.
        claimed = [r for r in await store.claim_due(state.ledger) if (r.batch_id, r.part) == (ref.batch_id, ref.part)]
        if not claimed:
            return  # another process got it first
        ref = claimed[0]
    await collect_part(state, ref)


async def collect_part(state: AppState, ref: store.PartRef) -> None:
    """Stream an ended part's results into the ledger in chunks; close it when all are in."""
    assert ref.api_batch_id is not None
    row = await store.batch_row(state.ledger.conn, ref.batch_id)
    assert row is not None
    ctx = _Ctx(state, ref, row, await store.round_tiers(state.ledger.conn, ref.batch_id))
    chunk: list[BatchItemResult] = []
    async for item in state.claude().batch_results(ref.api_batch_id):
        chunk.append(item)
        if len(chunk) >= SETTLE_CHUNK:
            await ctx.settle(chunk)
            chunk = []
    if chunk:
        await ctx.settle(chunk)
    missing = await store.unsettled(state.ledger, ref)
    if missing:
        # The API returned no line for these: record them (cost 0) so the batch can close.
        log.warning("batch %s part %d: %d results missing", ref.batch_id, ref.part, len(missing))
        await ctx.settle(
            [BatchItemResult(build.custom_id(i), "missing", error="no result line returned") for i in missing]
        )
    done = await store.part_collected(state.ledger, ref)
    log.info("batch %s part %d collected%s", ref.batch_id, ref.part, "; batch settled" if done else "")


class _Ctx:
    def __init__(self, state: AppState, ref: store.PartRef, row: Row, tiers: list[str]) -> None:
        self.state, self.ref = state, ref
        get = row.__getitem__
        self.session, self.policy, self.tier = str(get("session_id")), str(get("policy")), str(get("tier"))
        self.model, self.baseline = str(get("model")), str(get("baseline_model"))
        self.batch_id = str(get("id"))
        self.user, self.project = get("user_name"), get("project")
        self.round = int(get("round"))
        self.quality = quality.Quality.of(str(get("quality")))
        self.earlier = tiers[:-1]  # the tiers of the rounds before this one: each failed these items

    async def settle(self, items: list[BatchItemResult]) -> int:
        # A caller's must_match or schema may take its whole time budget on every answer: judged on
        # the event loop, 500 of them would stall every other tool call of this server for minutes
        # (and its heartbeat past its lease). Off the loop, as routed_complete's judge is.
        if self.quality.checked:
            out = await anyio.to_thread.run_sync(self._all_settled, items)
        else:
            out = self._all_settled(items)
        return await store.settle(self.state.ledger, self.ref, out)

    def _all_settled(self, items: list[BatchItemResult]) -> list[store.Settled]:
        out: list[store.Settled] = []
        for r in items:
            idx = build.index_of(r.custom_id)
            if idx is None:
                log.warning("batch %s: ignoring unknown custom_id %r", self.batch_id, r.custom_id)
                continue
            out.append(self._settled(idx, r))
        return out

    def _settled(self, idx: int, r: BatchItemResult) -> store.Settled:
        """One result priced and judged: re-asked next round, or final (with a call_id)."""
        prices, policy, q = self.state.prices, self.state.policy, self.quality
        ok = r.result_type == "succeeded"
        model = r.model or self.model
        failed = q.failed(r.text, r.stop_reason) if ok else None
        escalate = failed is not None and q.escalates(policy, self.tier, self.round, failed)
        outcome = (
            "escalated" if escalate else ("check_failed" if failed else OUTCOMES.get(r.result_type, r.result_type))
        )
        attempt = Attempt(
            request_key=f"batch:{self.ref.api_batch_id}:{r.custom_id}",
            session_id=self.session,
            tool="batch_submit",
            model=model,
            usage=r.usage,
            cost_pusd=prices.cost(model, r.usage, batch=True) if ok else 0,
            # A re-asked answer is offload's cost of getting the one the host uses, not a call it saved.
            baseline_pusd=prices.baseline_cost(self.baseline, r.usage) if ok and not escalate else 0,
            cache_gain_pusd=prices.cache_gain(model, r.usage, batch=True) if ok else 0,
            policy=self.policy,
            tier=self.tier,
            batch=True,
            outcome=outcome,
            stop_reason=r.stop_reason,
            batch_id=self.batch_id,
            completion_text=r.text if policy.store_text and ok else None,
            user=self.user,
            project=self.project,
        )
        call = None
        evidence: tuple[tuple[str, bool | None], ...] = ()
        if ok and not escalate:
            checked = q.checked and not failed
            call = learning.CallRecord(new_call_id(), self.session, q.family, self.tier, attempt.request_key, checked)
            # Each earlier round's tier failed this item; this one passed, failed, or is unchecked.
            mine = (self.tier, learning.adequacy(q.checked, failed))
            evidence = (*((t, False) for t in self.earlier), mine)
        text = r.text if ok else None
        return store.Settled(
            idx, r.result_type, text, r.stop_reason, r.error, attempt, failed, escalate, call, evidence
        )
