"""Metered cheap-tier calls for the context tools: tier choice, budget pre-check, bounded fan-out.

Chunk calls share one system prompt under a cache breakpoint. "A cache entry only becomes
available after the first response begins" (prompt-caching docs), so before a fan-out with
something to cache `prewarm` sends one `max_tokens: 0` request ("Pre-warming the cache": it
writes the cache at the breakpoints and bills zero output tokens); then every call goes in
parallel and reads. That costs about one cache read more than sending the first chunk alone,
and saves a whole generation of latency. A failed call does not cancel its siblings: a call
already answered has been paid for and must reach the ledger, so in-flight calls finish, no
new ones start, and then the first error is raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from offload.core.cache_placement import Expect
from offload.core.errors import BudgetExceededError
from offload.core.money import fmt_usd
from offload.core.output import Progress, no_progress
from offload.core.pricing import Usage
from offload.core.request import Prompt
from offload.core.tokens import approx_tokens
from offload.infra.claude import Completion
from offload.infra.ledger import budgets
from offload.metering.metered import Metered, Verdict, limits_of, metered_call
from offload.metering.placement import placed_params
from offload.policy import engine

if TYPE_CHECKING:
    from offload.state import AppState

CONCURRENCY = 4


@dataclass(frozen=True)
class Tier:
    name: str
    model: str
    max_tokens: int  # the policy's output cap for this tier


def pick_tier(state: AppState, task: str, prompt_tokens: int) -> Tier:
    """The tier the policy routes `task` to (the shipped policies send summarize/trim to cheap)."""
    policy = state.policy
    decision = engine.decide(policy, engine.RouteRequest(prompt_tokens=prompt_tokens, task=task))
    return Tier(decision.tier, decision.model, policy.max_tokens_for(decision.tier, None))


async def params_for(
    state: AppState, tier: Tier, prompt: Prompt, max_tokens: int, expect: Expect | None = None
) -> dict[str, Any]:
    return await placed_params(state, tier.model, prompt, max_tokens=max_tokens, expect=expect)


def prompt_tokens(prompt: Prompt) -> int:
    return approx_tokens(prompt.prompt) + approx_tokens(prompt.system or "")


def estimate_pusd(state: AppState, tier: Tier, calls: Sequence[tuple[int, int]]) -> int:
    """A realistic (not worst-case) cost of (input_tokens, max_tokens) calls, for the pre-check below."""
    return sum(state.prices.cost(tier.model, Usage(input_tokens=i, output_tokens=o)) for i, o in calls)


async def check_headroom(state: AppState, session: str, estimate_pusd: int, what: str) -> None:
    """Refuse a multi-call job up front when even its expected cost exceeds the budget left.

    Each call still reserves its own worst case; this only avoids paying for half a job.
    """
    room = await budgets.headroom(state.ledger, session, limits_of(state.policy))
    left = room.min_pusd
    if left is not None and estimate_pusd > left:
        # Name the budget as routed_complete's refusals do: a team member must see it is, say, the
        # project's monthly budget someone else set, not just "the budget".
        budget = room.detail or f"{room.tightest} budget"
        raise BudgetExceededError(
            f"{what} would cost about {fmt_usd(estimate_pusd)} but the {budget} has only {fmt_usd(left)} left; "
            "send less material (fewer paths, or trim_result first), or wait for the budget to reset "
            "(see budget_status)",
            scope=room.tightest or "headroom",
            remaining_pusd=left,
            resets_at=None,
        )


def _cacheable(params: dict[str, Any]) -> bool:
    system = params.get("system")
    return isinstance(system, list) and any("cache_control" in b for b in system)


# The pre-warm's user turn: the cached prefix ends with the system prompt, before any message.
WARM_PROMPT = "."


def _warmup(_: Completion) -> Verdict:
    return Verdict("prewarm", counts_toward_baseline=False)  # no answer the host uses: no baseline


async def prewarm(
    state: AppState, session: str, *, tool: str, tier: Tier, calls: Sequence[tuple[Prompt, int]]
) -> list[Metered]:
    """Write the shared system prefix before a fan-out of `calls`; [] when there is none to write."""
    if len(calls) < 2:
        return []
    # The fan-out reads the prefix len(calls) times right after this write: that reuse is certain.
    params = await params_for(state, tier, calls[0][0], 0, Expect(reuses=len(calls)))
    if not _cacheable(params):
        return []
    params["messages"] = [{"role": "user", "content": [{"type": "text", "text": WARM_PROMPT}]}]
    warm = await metered_call(
        state, session, tool=tool, tier=tier.name, params=params, judge=_warmup, warms_baseline=False
    )
    return [warm]


async def run_calls(
    state: AppState,
    session: str,
    *,
    tool: str,
    tier: Tier,
    calls: Sequence[tuple[Prompt, int]],
    progress: Progress = no_progress,
    done_before: int = 0,
    total_steps: int | None = None,
    label: str = "call",
) -> list[Metered]:
    """Send each (prompt, max_tokens) through `metered_call`, in parallel; results in input order.

    Call `prewarm` first when the calls share a cacheable prefix.
    """
    params = [await params_for(state, tier, p, m) for p, m in calls]
    results: list[Metered | None] = [None] * len(calls)
    errors: list[BaseException] = []
    total = total_steps if total_steps is not None else len(calls)
    finished = done_before
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def one(i: int) -> None:
        nonlocal finished
        async with limiter:
            if errors:
                return
            try:
                results[i] = await metered_call(
                    state,
                    session,
                    tool=tool,
                    tier=tier.name,
                    params=params[i],
                    prompt_text=calls[i][0].prompt,  # kept only when the policy opts in (store_text)
                )
            except Exception as exc:  # collected, re-raised once the others are settled
                errors.append(exc)
                return
        finished += 1
        await progress(finished, total, f"{label} {i + 1}/{len(calls)} done")

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def total_usage(results: Sequence[Metered]) -> Usage:
    usage = Usage()
    for r in results:
        usage = usage + r.completion.usage
    return usage


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_write_tokens": usage.cache_write_5m + usage.cache_write_1h,
        "cache_read_tokens": usage.cache_read,
    }


__all__ = [
    "CONCURRENCY",
    "Tier",
    "check_headroom",
    "estimate_pusd",
    "params_for",
    "pick_tier",
    "prewarm",
    "prompt_tokens",
    "run_calls",
    "total_usage",
    "usage_json",
]
