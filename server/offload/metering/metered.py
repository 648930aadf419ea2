"""Every synchronous Claude call goes through here: reserve → call → price → record.

The reservation is the worst case (upper-bound input tokens + max_tokens of output), taken
atomically across processes before the call, so concurrent sessions can't jointly overrun a
budget. The attempt row and the release of its reservation commit in one transaction, keyed
by a request key, so a cost is never lost once the answer is in hand and never counted twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from offload.core.baseline_cache import Sent, request_owner
from offload.core.errors import LedgerUnavailableError, OffloadError
from offload.core.money import fmt_usd
from offload.core.request import request_hash
from offload.core.text import fmt_tokens
from offload.core.tokens import MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS, upper_bound_tokens
from offload.infra.claude import Completion, StreamDropped
from offload.infra.ledger import budgets, journal, records
from offload.infra.ledger.budgets import BudgetLimits, Reservation
from offload.infra.ledger.db import Also
from offload.infra.ledger.windows import utcnow
from offload.policy.models import Policy

if TYPE_CHECKING:
    from offload.state import AppState


log = logging.getLogger("offload.metering")

RESERVATION_TTL_S = 3600


def limits_of(policy: Policy) -> BudgetLimits:
    return BudgetLimits.from_budgets(policy.budgets)


@dataclass(frozen=True)
class Verdict:
    """What a caller's judge makes of an answer.

    Only the answer the host finally uses stands in for "the call the host would have made
    itself" (`counts_toward_baseline`); failed rungs of an escalation don't add to the
    baseline, so savings are never inflated by offload's own retries.
    """

    outcome: str
    counts_toward_baseline: bool = True
    failed_check: str | None = None  # the check that failed, if any


@dataclass(frozen=True)
class Metered:
    completion: Completion
    cost_pusd: int
    baseline_pusd: int
    request_key: str
    verdict: Verdict
    # Settled spend per scope once this call is recorded, as its reservation read it plus its own
    # cost (None when unknown): budget warnings come from it without summing the ledger again.
    spent: budgets.Spent | None = None
    # False when the ledger could not take the attempt and it went to the journal: what `finalize`
    # wrote with it was rolled back, and its caller must write that again.
    recorded: bool = True

    @property
    def outcome(self) -> str:
        return self.verdict.outcome


Judge = Callable[[Completion], Verdict]
# Given the verdict on a paid answer and its row, more writes to commit with that row (or None).
Finalize = Callable[[Verdict, records.Attempt], Also | None]


def _accept(_: Completion) -> Verdict:
    return Verdict("ok")


async def reserve(state: AppState, session: str, amount_pusd: int) -> Reservation:
    # The TTL only matters for a process that hangs (a dead one is freed at once by its pid), so
    # it is set well past the slowest call the SDK can make with its timeout and retries.
    return await budgets.reserve(state.ledger, session, amount_pusd, limits_of(state.policy), ttl_s=RESERVATION_TTL_S)


def _content_bytes(content: Any) -> int:
    if isinstance(content, str):
        return upper_bound_tokens(content)
    total = 0
    for block in content or ():
        if isinstance(block, dict) and block.get("type") == "text":
            total += upper_bound_tokens(str(block.get("text", "")))
        else:  # other blocks are tokenized as their JSON: bound them by it
            total += len(json.dumps(block, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return total


def params_upper_bound(params: dict[str, Any]) -> int:
    """A true upper bound on the prompt tokens of `params` exactly as sent.

    Bounding the request as sent, not the caller's texts, counts what assembly adds (document
    wrappers, prefills, several messages): for text that is one token per byte those bytes are
    tokens, and a reservation short of them would let a settled call exceed its budget.
    """
    n = REQUEST_OVERHEAD_TOKENS
    if params.get("system"):
        n += MESSAGE_OVERHEAD_TOKENS + _content_bytes(params["system"])
    for message in params.get("messages", ()):
        n += MESSAGE_OVERHEAD_TOKENS + _content_bytes(message.get("content"))
    if params.get("tools"):
        n += len(json.dumps(params["tools"], ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return n


def cache_ttls(params: dict[str, Any]) -> frozenset[str]:
    """The cache TTLs a request's breakpoints ask for: only those can be written (and billed)."""
    found: set[str] = set()
    blocks: list[Any] = list(params.get("system") or []) if isinstance(params.get("system"), list) else []
    for message in params.get("messages", ()):
        content = message.get("content")
        blocks += content if isinstance(content, list) else []
    blocks += list(params.get("tools") or [])
    for block in blocks:
        control = block.get("cache_control") if isinstance(block, dict) else None
        if control:
            found.add(str(control.get("ttl", "5m")))
    return frozenset(found)


async def metered_call(
    state: AppState,
    session: str,
    *,
    tool: str,
    tier: str,
    params: dict[str, Any],
    step: int = 0,
    judge: Judge = _accept,
    prompt_text: str | None = None,
    prompt_tokens: int | None = None,
    judge_in_thread: bool = True,
    finalize: Finalize | None = None,
    warms_baseline: bool = True,
) -> Metered:
    """Reserve the worst case, call, judge, price and record (releasing the hold) in one transaction.

    `judge_in_thread=False` for a judge that runs no regex or schema: it then costs no thread hop.
    `finalize` adds writes to the answer's record transaction (see `Finalize`).
    `warms_baseline=False`: a call the host would not have made to the baseline model (a pre-warm).
    """
    model = str(params["model"])
    policy = state.policy
    # A caller that had the API count the prompt reserves for that count, not the byte bound.
    bound = params_upper_bound(params) if prompt_tokens is None else prompt_tokens
    worst = state.prices.worst_case(model, bound, int(params["max_tokens"]), ttls=cache_ttls(params))
    reservation = await reserve(state, session, worst)
    where = (policy, session, tool, tier, step)
    # From here the hold is this call's: the call and its record run where a host's cancel can't
    # cut them off between the API's answer (billed) and its row (see `detached`).
    return await state.detached.run(
        lambda: _call_and_record(
            state, where, params, reservation, judge, prompt_text, judge_in_thread, warms_baseline, finalize
        )
    )


async def _call_and_record(
    state: AppState,
    where: tuple[Policy, str, str, str, int],
    params: dict[str, Any],
    reservation: Reservation,
    judge: Judge,
    prompt_text: str | None,
    judge_in_thread: bool,
    warms_baseline: bool,
    finalize: Finalize | None,
) -> Metered:
    # The baseline model's request for this one leaves now too (a pre-warm has none).
    cache = state.baseline_cache
    always = where[0].caching.placement == "always"
    sent = cache.sending(where[0].baseline, params, request_owner(), always=always) if warms_baseline else None
    try:
        completion = await state.claude().create(params)
    except StreamDropped as exc:
        # The API billed what it generated before the stream broke: one row for that, no retry.
        with anyio.CancelScope(shield=True):
            if exc.partial is None:
                await budgets.release(state.ledger, reservation)
            else:
                dropped = _attempt(state, where, params, exc.partial, Verdict("dropped", False), prompt_text, sent)
                await record_paid(state, dropped, reservation)
        raise
    except BaseException:
        # No answer means nothing billed that we can see: free the hold at once, even when the
        # server is closing (a cancelled await would otherwise leave it held for an hour).
        with anyio.CancelScope(shield=True):
            await budgets.release(state.ledger, reservation)
        raise
    # The answer is paid for: a cancellation arriving now must not skip its checks or lose its row.
    with anyio.CancelScope(shield=True):
        verdict = await _judged(judge, completion) if judge_in_thread else _judged_here(judge, completion)
        attempt = _attempt(state, where, params, completion, verdict, prompt_text, sent)
        also = finalize(verdict, attempt) if finalize is not None else None
        recorded = await record_paid(state, attempt, reservation, also=also)
    # Once the paid answer is recorded (not inside the shield: a slow count must not hold a close).
    if sent is not None and (family := cache.to_count(where[0].baseline, sent)) is not None:
        with anyio.move_on_after(COUNT_WAIT_S):
            await _count_system_prompt(state, params, where[0].baseline, family)
    spent = _spent_after(reservation, attempt.cost_pusd)
    return Metered(completion, attempt.cost_pusd, attempt.baseline_pusd, attempt.request_key, verdict, spent, recorded)


# The most a call's answer waits for its system prompt to be counted for the baseline (once per prompt).
COUNT_WAIT_S = 1.0


async def _count_system_prompt(state: AppState, params: dict[str, Any], baseline: str, family: str) -> None:
    """Tell the baseline cache the system prompt's size, from the API's free count_tokens (the
    difference a system prompt makes to one short message): once per prompt, for a prompt no tier
    has cached yet, whose size the baseline otherwise only bounds. It settles the calls after."""
    blocks = [{k: v for k, v in b.items() if k != "cache_control"} for b in params["system"]]
    bare: dict[str, Any] = {"model": params["model"], "messages": [{"role": "user", "content": "."}]}
    try:
        tokens = await state.claude().count_tokens({**bare, "system": blocks}) - await state.claude().count_tokens(bare)
    except OffloadError as exc:  # the bound stands
        log.info("system prompt not counted for the baseline: %s", exc)
        return
    state.baseline_cache.counted(state.prices, baseline, family, tokens)


def _spent_after(reservation: Reservation, cost_pusd: int) -> budgets.Spent | None:
    """Every scope the reservation read (team scopes too), with this attempt's cost added: the
    warnings after a call need no second read of the ledger."""
    if not reservation.seen:
        return None
    return budgets.Spent.of([replace(s, spent_pusd=s.spent_pusd + cost_pusd) for s in reservation.seen])


def _attempt(
    state: AppState,
    where: tuple[Policy, str, str, str, int],  # the policy the call was made under, session, tool, tier, step
    params: dict[str, Any],
    completion: Completion,
    verdict: Verdict,
    prompt_text: str | None,
    sent: Sent | None,
) -> records.Attempt:
    policy, session, tool, tier, step = where
    model = str(params["model"])
    # Only the answer the host uses stands for its own call to the baseline model (and warms its cache).
    if not verdict.counts_toward_baseline:
        baseline = 0
    elif policy.caching.placement == "never":  # nothing cached: the baseline would cache nothing either
        baseline = state.prices.baseline_cost(policy.baseline, completion.usage)
    else:
        baseline = state.baseline_cache.cost(state.prices, policy.baseline, params, completion.usage, sent=sent)
    return records.Attempt(
        request_key=f"{tool}:{uuid.uuid4().hex}",
        session_id=session,
        tool=tool,
        model=model,
        usage=completion.usage,
        cost_pusd=state.prices.cost(model, completion.usage),
        cache_gain_pusd=state.prices.cache_gain(model, completion.usage),
        baseline_pusd=baseline,
        policy=policy.name,
        tier=tier,
        step=step,
        outcome=verdict.outcome,
        stop_reason=completion.stop_reason,
        request_hash=request_hash(params),
        prompt_text=prompt_text if policy.store_text else None,
        completion_text=completion.text if policy.store_text else None,
    )


# Notes for the host about this tool call's bookkeeping, collected by the tool adapter (see
# `collecting_notes`); a context variable so the services in between need not pass them along.
_notes: ContextVar[list[str] | None] = ContextVar("offload_ledger_notes", default=None)


@contextmanager
def collecting_notes() -> Iterator[list[str]]:
    """Collect the notes metered calls inside this block leave (e.g. an answer spooled to the journal)."""
    notes: list[str] = []
    token = _notes.set(notes)
    try:
        yield notes
    finally:
        _notes.reset(token)


async def record_paid(
    state: AppState, attempt: records.Attempt, reservation: Reservation | None, *, also: Also | None = None
) -> bool:
    """Record a paid attempt; if the ledger can't take it, spool it to the journal instead.

    A paid answer must reach the host whatever the ledger's state: the journal line is replayed
    (exactly once, by request_key) by this process's next recorded call, or the next time any
    offload process opens the ledger. Only the attempt is spooled: writes in `also` are then
    not made (False: their callers see that and fall back).
    """
    try:
        await records.record(state.ledger, attempt, reservation, also=also)
    except LedgerUnavailableError as exc:
        who = budgets.acting(state.ledger)
        stamped = replace(attempt, ts=attempt.ts or utcnow(), project=who.project, user=who.user)
        path = await anyio.to_thread.run_sync(journal.spool, state.ledger.path, stamped, reservation)
        log.warning("%s; spooled %s to %s", exc, attempt.request_key, path)
        leave_note(f"ledger busy or full: this call's cost was kept in {path.name} and is recorded on the next start")
        return False
    await _replay_spooled(state)
    return True


async def _replay_spooled(state: AppState) -> None:
    """The ledger takes writes again: what an earlier call spooled goes in now, not at the next
    start (a long-lived server would leave every total short, and its holds in place, until then)."""
    if journal.pending_bytes(state.ledger.path) == 0:
        return
    try:
        await journal.replay(state.ledger, wait=False)
    except (LedgerUnavailableError, OSError) as exc:
        log.warning("ledger journal not replayed yet: %s", exc)


def leave_note(note: str) -> None:
    """A note for the host about this tool call's bookkeeping (kept once, if anyone collects notes)."""
    notes = _notes.get()
    if notes is not None and note not in notes:
        notes.append(note)


async def _judged(judge: Judge, completion: Completion) -> Verdict:
    """The caller's checks, in a worker thread (a regex or schema may take its whole time budget).

    A check that breaks on the answer must not lose the paid answer nor leave its hold: it
    counts as a failed check, and the answer goes back to the host.
    """
    try:
        return await anyio.to_thread.run_sync(judge, completion)
    except Exception as exc:
        log.warning("a check failed to run on a paid answer: %r", exc)
        return Verdict("check_failed", failed_check="check_error")


def _judged_here(judge: Judge, completion: Completion) -> Verdict:
    """`_judged` on the event loop, for a judge with no regex or schema to run."""
    try:
        return judge(completion)
    except Exception as exc:
        log.warning("a check failed to run on a paid answer: %r", exc)
        return Verdict("check_failed", failed_check="check_error")


async def budget_warnings(state: AppState, session: str, spent: budgets.Spent | None = None) -> list[str]:
    """Warnings for scopes past a `warn_at` threshold; `spent` (from a `Metered`) spares a ledger read."""
    policy = state.policy
    if not policy.budgets.warn_at:
        return []
    limits = limits_of(policy)
    if spent is None:
        who = budgets.acting(state.ledger)
        spent = budgets.Spent.of(await budgets.scope_states(state.ledger.conn, session, limits, utcnow(), who))
    return budgets.warnings(spent, limits, policy.budgets.warn_at)


def short_model(model: str) -> str:
    return model.removeprefix("claude-")


def footer(model: str, cost_pusd: int, cached_tokens: int, escalated: int, extra: list[str] | None = None) -> str:
    cached = fmt_tokens(cached_tokens)
    parts = [
        short_model(model),
        fmt_usd(cost_pusd),
        f"cached {cached}",
        f"escalated {escalated}",
        *(extra or []),
    ]
    return "[" + " · ".join(parts) + "]"


__all__ = [
    "Metered",
    "OffloadError",
    "budget_warnings",
    "footer",
    "leave_note",
    "limits_of",
    "metered_call",
    "reserve",
]
