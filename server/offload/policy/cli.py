"""`offload policy check FILE...` and `offload policy explain FILE "prompt"`."""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import TYPE_CHECKING

from offload.errors import ConfigError
from offload.money import fmt_usd
from offload.policy.engine import RouteRequest, decide
from offload.policy.loader import load_policy
from offload.tokens import request_upper_bound

if TYPE_CHECKING:
    from offload.pricing import PriceTable


def _price_table() -> PriceTable | None:
    # The price table is optional for checking: without it, model ids are not cross-checked.
    try:
        from offload.pricing import PriceTable
    except ImportError:
        return None
    return PriceTable.load()


def _known_models(table: PriceTable | None) -> Collection[str] | None:
    return None if table is None else set(table.models)


def cmd_check(files: list[str]) -> int:
    """Validate each file; print `ok ...` per good file, the error per bad one. 1 if any was bad."""
    known = _known_models(_price_table())
    status = 0
    for file in files:
        try:
            policy = load_policy(file, known_models=known)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            status = 1
            continue
        tiers = " ".join(f"{t}={m}" for t, m in policy.tiers.items())
        print(f"ok {file} ({policy.name}: {len(policy.rules)} rules, tiers {tiers})")
    return status


def cmd_explain(file: str, prompt: str, *, task: str | None, difficulty: str | None) -> int:
    """Print the routing decision for one prompt, with its worst-case cost on each step."""
    table = _price_table()
    policy = load_policy(file, known_models=_known_models(table))
    tokens = request_upper_bound([prompt])
    decision = decide(policy, RouteRequest(prompt_tokens=tokens, task=task, difficulty=difficulty, prompt_text=prompt))
    ladder = " -> ".join(decision.ladder) if decision.ladder else "(none)"
    out = [
        f"policy     {policy.name} ({file})",
        f"tier       {decision.tier} -> {decision.model}",
        f"rule       {decision.rule}",
        f"reason     {decision.reason}",
        f"max_tokens {decision.max_tokens}",
        f"escalation {ladder} (on: {', '.join(policy.escalation.on) or 'never'})",
    ]
    if decision.triage_needed and policy.triage is not None:
        out.append(f"triage     a {policy.triage.tier}-tier call would first guess the difficulty (none given)")
    if table is not None:
        first = table.worst_case(decision.model, tokens, decision.max_tokens)
        total = first
        for tier in decision.ladder:
            total += table.worst_case(policy.tiers[tier], tokens, policy.max_tokens_for(tier))
        line = f"worst case {fmt_usd(first)} for <= {tokens} input tokens + {decision.max_tokens} output"
        if decision.ladder:
            line += f"; {fmt_usd(total)} if every escalation step runs"
        out.append(line)
    print("\n".join(out))
    return 0
