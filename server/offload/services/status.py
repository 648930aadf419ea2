"""`budget_status`: where the money went, what is left, and what offload saved. Compact."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from offload.core.money import fmt_usd, usd_json
from offload.core.output import ToolOutput
from offload.core.scopes import SCOPE_OF
from offload.core.tenancy import current_owner
from offload.infra.ledger import budgets, reports
from offload.metering.metered import limits_of, short_model

if TYPE_CHECKING:
    from offload.state import AppState

# Budget lines say which limit ("daily budget"); the activity line says which calls it counts
# ("today"): no two share a label.
_ACTIVITY = {"session": "this session", "day": "today", "month": "this month"}


def _signed(pusd: int) -> str:
    return ("-" if pusd < 0 else "+") + fmt_usd(abs(pusd))


def _money(pusd: int | None) -> str | None:
    return None if pusd is None else usd_json(pusd)


async def budget_status(state: AppState, session: str, scope: str = "all") -> ToolOutput:
    policy = state.policy
    summary = await reports.summary(
        state.ledger,
        session,
        limits_of(policy),
        window="session" if scope == "all" else scope,
        owner=current_owner(),
        who=budgets.acting(state.ledger),
    )
    wanted = [s for s in summary.scopes if scope == "all" or s.scope == SCOPE_OF[scope]]

    lines = []
    for s in wanted:
        label = budgets.label(s)
        if s.limit_pusd is None:
            lines.append(f"{label}: {fmt_usd(s.spent_pusd)} spent, no limit")
        else:
            # Held for calls still running and batches still pending; counted against the limit.
            held = f" (+{fmt_usd(s.reserved_pusd)} reserved)" if s.reserved_pusd else ""
            lines.append(
                f"{label}: {fmt_usd(s.spent_pusd)}{held} of {fmt_usd(s.limit_pusd)}, "
                f"{fmt_usd(s.remaining_pusd or 0)} left"
            )
    activity = _ACTIVITY[summary.window]
    if summary.calls:
        lines.append(
            f"{activity}: {summary.calls} calls, saved {fmt_usd(summary.saved_pusd)} "
            f"({summary.saved_pct}%) vs {short_model(policy.baseline)}, cache hits {summary.cache_hit_pct}%, "
            f"cache net {_signed(summary.cache_gain_pusd)}"
        )
        q = summary.quality
        if q.answers:
            # Savings mean little without how many answers were known good: show them side by side.
            lines.append(f"answers: {q.answers} ({q.checked} checked, {q.redone} redone, {q.unchecked} unchecked)")
    else:
        lines.append(f"{activity}: no calls yet")
    if summary.top_models:
        lines.append("top: " + ", ".join(f"{short_model(m.model)} {fmt_usd(m.cost_pusd)}" for m in summary.top_models))
    if summary.pending_batches:
        lines.append(f"pending batches: {summary.pending_batches}")
    lines.append(f"policy: {policy.name} ({policy.budgets.on_exceed} when over)")
    if state.policies.error:
        lines.append(f"policy file error (last good policy kept): {state.policies.error}")

    data: dict[str, Any] = {
        "session": session,
        "scopes": {
            s.scope: {
                "spent_usd": usd_json(s.spent_pusd),
                "reserved_usd": usd_json(s.reserved_pusd),
                "limit_usd": _money(s.limit_pusd),
                "remaining_usd": _money(s.remaining_pusd),
                "resets_at": s.resets_at.isoformat() if s.resets_at else None,
                **({"for": s.name} if s.scope in ("user", "project") else {}),
            }
            for s in wanted
        },
        "window": summary.window,
        "calls": summary.calls,
        "cost_usd": usd_json(summary.cost_pusd),
        "baseline_usd": usd_json(summary.baseline_pusd),
        "saved_usd": usd_json(summary.saved_pusd),
        "saved_pct": str(summary.saved_pct),
        "cache_hit_pct": str(summary.cache_hit_pct),
        "answers": summary.quality.to_json(),
        # What cache reads saved minus what cache-write premiums cost; negative when caching lost money.
        "cache_net_gain_usd": usd_json(summary.cache_gain_pusd),
        "top_models": [
            {"model": m.model, "calls": m.calls, "cost_usd": usd_json(m.cost_pusd)} for m in summary.top_models
        ],
        "pending_batches": summary.pending_batches,
        "policy": policy.name,
        "policy_path": str(state.policies.path),
        "policy_error": state.policies.error,
    }
    return ToolOutput(text="\n".join(lines), data=data)
