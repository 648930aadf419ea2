"""`routed_complete`: the cheapest adequate tier, proven by the caller's checks.

decide (policy + budget headroom) → call the chosen tier → check → climb the ladder only
when a check names a trigger the policy escalates on. Every rung is a priced ledger row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from offload.core.checks import Checks, failed_check
from offload.core.errors import BudgetExceededError, InputError, LedgerUnavailableError, UpstreamError
from offload.core.money import fmt_usd, usd_json
from offload.core.output import Progress, ToolOutput, no_progress
from offload.core.request import Prompt, build_params
from offload.core.tokens import request_upper_bound
from offload.infra import files
from offload.infra.claude import Completion
from offload.infra.ledger import budgets
from offload.metering.metered import Verdict, budget_warnings, footer, limits_of, metered_call
from offload.policy import engine
from offload.policy.models import DIFFICULTIES

if TYPE_CHECKING:
    from offload.state import AppState

TOOL = "routed_complete"


@dataclass(frozen=True)
class RoutedArgs:
    prompt: str
    system: str | None = None
    context_files: tuple[str, ...] = ()
    task: str | None = None
    difficulty: str | None = None
    tier: str | None = None
    max_tokens: int | None = None
    response_schema: dict[str, Any] | None = None
    must_match: str | None = None


@dataclass(frozen=True)
class _Rung:
    tier: str
    model: str
    cost_pusd: int
    outcome: str
    trigger: str | None
    completion: Completion


def _system(args: RoutedArgs, checks: Checks) -> str | None:
    parts = [p for p in (args.system, checks.instruction()) if p]
    return "\n\n".join(parts) or None


async def routed_complete(
    state: AppState, session: str, args: RoutedArgs, *, progress: Progress = no_progress
) -> ToolOutput:
    if not args.prompt.strip():
        raise InputError("prompt is empty; send the sub-task to run as `prompt`")
    checks = Checks.build(args.response_schema, args.must_match)
    settings = state.settings
    docs = files.read_many(list(args.context_files), settings) if args.context_files else []
    documents = tuple((files.shown(path, settings.roots), text) for path, text in docs)
    prompt = Prompt(prompt=args.prompt, system=_system(args, checks), documents=documents)
    upper = request_upper_bound([args.prompt, prompt.system or "", *(t for _, t in documents)])

    policy = state.policy
    worst_by_tier = engine.worst_case_by_tier(policy, upper, state.prices.worst_case, args.max_tokens)
    headroom = headroom_scope = None
    if policy.budgets.on_exceed == "downgrade":
        room = await budgets.headroom(state.ledger, session, limits_of(policy))
        headroom, headroom_scope = room.min_pusd, room.tightest
    request = engine.RouteRequest(
        prompt_tokens=upper,
        task=args.task,
        difficulty=args.difficulty,
        forced_tier=args.tier,
        prompt_text=args.prompt,
        worst_case_pusd=worst_by_tier,
        headroom_pusd=headroom,
        headroom_scope=headroom_scope,
        max_tokens=args.max_tokens,
    )
    decision = engine.decide(policy, request)
    triaged: str | None = None
    triage_cost = 0
    if decision.triage_needed:
        triaged, triage_cost = await _triage(state, session, args.prompt)
        if triaged is not None:
            decision = engine.decide(policy, replace(request, difficulty=triaged))

    ladder = [decision.tier, *decision.ladder]
    rungs: list[_Rung] = []
    budget_stop: str | None = None
    for step, tier in enumerate(ladder):
        model = policy.tiers[tier]
        max_tokens = policy.max_tokens_for(tier, args.max_tokens)
        params = build_params(
            model,
            prompt,
            max_tokens=max_tokens,
            ttl=policy.caching.ttl,
            min_cacheable=state.prices.min_cacheable(model),
        )
        last = step == len(ladder) - 1

        def judge(c: Completion, last: bool = last) -> Verdict:
            failed = failed_check(c.text, c.stop_reason, checks)
            climbs = failed is not None and not last and engine.should_escalate(policy, failed)
            outcome = "escalated" if climbs else ("ok" if failed is None else "check_failed")
            return Verdict(outcome, counts_toward_baseline=not climbs, failed_check=failed)

        await progress(step, len(ladder), f"{tier}: {model}")
        try:
            metered = await metered_call(
                state,
                session,
                tool=TOOL,
                tier=tier,
                params=params,
                step=step,
                judge=judge,
                prompt_text=args.prompt,
            )
        except UpstreamError:
            if last or not engine.should_escalate(policy, "api_error"):
                raise
            continue
        except BudgetExceededError as exc:
            if not rungs:
                raise
            # The budget can't cover the next rung: the host keeps the answer it already paid for.
            budget_stop = f"escalation stopped, {exc.scope} budget: {fmt_usd(exc.remaining_pusd)} left"
            break
        except LedgerUnavailableError:
            if not rungs:
                raise
            # The next rung can't be reserved (ledger full or locked): keep the answer already paid for.
            budget_stop = "escalation stopped: the ledger could not be written"
            break
        rungs.append(
            _Rung(tier, model, metered.cost_pusd, metered.outcome, metered.verdict.failed_check, metered.completion)
        )
        if metered.outcome != "escalated":
            break
    if not rungs:  # every rung failed upstream and escalation moved past all of them
        raise UpstreamError("the Claude API failed on every tier of the ladder; try again later")
    return await _output(state, session, decision, rungs, triaged, triage_cost, budget_stop)


TRIAGE_SYSTEM = (
    "Rate how hard the task below is for a language model. Answer with exactly one word: easy, medium or hard."
)
TRIAGE_PROMPT_CHARS = 4000  # the start of a task says enough about its difficulty


async def _triage(state: AppState, session: str, prompt: str) -> tuple[str | None, int]:
    """A few-token call on the triage tier that sets the difficulty the caller didn't give."""
    policy = state.policy
    triage = policy.triage
    assert triage is not None
    model = policy.tiers[triage.tier]
    text = "Task to rate:\n" + prompt[:TRIAGE_PROMPT_CHARS]
    params = build_params(
        model, Prompt(prompt=text, system=TRIAGE_SYSTEM), max_tokens=triage.max_tokens, min_cacheable=1 << 30
    )
    metered = await metered_call(
        state,
        session,
        tool=TOOL,
        tier=triage.tier,
        params=params,
        step=-1,
        judge=lambda _: Verdict("triage", counts_toward_baseline=False),
    )
    words = re.findall(r"[a-z]+", metered.completion.text.lower())
    # An unusable answer leaves the route to the rules, as if triage were off.
    return next((w for w in words if w in DIFFICULTIES), None), metered.cost_pusd


async def _output(
    state: AppState,
    session: str,
    decision: engine.RouteDecision,
    rungs: list[_Rung],
    triaged: str | None,
    triage_cost: int,
    budget_stop: str | None = None,
) -> ToolOutput:
    final = rungs[-1]
    total = triage_cost + sum(r.cost_pusd for r in rungs)
    usage = final.completion.usage
    extra = []
    if final.trigger is not None:
        extra.append(f"check failed: {final.trigger}")
    if budget_stop is not None:
        extra.append(budget_stop)
    if decision.downgraded_from:
        extra.append(f"downgraded from {decision.downgraded_from}")
    if decision.use_batch:
        extra.append("near budget: batch_submit is 50% off")
    extra += await budget_warnings(state, session)
    line = footer(final.model, total, usage.cache_read, len(rungs) - 1, extra)
    data = {
        "model": final.model,
        "tier": final.tier,
        "cost_usd": usd_json(total),
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_write_tokens": usage.cache_write_5m + usage.cache_write_1h,
            "cache_read_tokens": usage.cache_read,
        },
        "attempts": [
            {
                "tier": r.tier,
                "model": r.model,
                "cost_usd": usd_json(r.cost_pusd),
                "outcome": r.outcome,
                "failed": r.trigger,
            }
            for r in rungs
        ],
        "rule": decision.rule,
        "triaged_difficulty": triaged,
        "check_passed": final.trigger is None,
    }
    return ToolOutput(text=f"{final.completion.text}\n{line}", data=data)
