"""`offload policy check FILE...`, `offload policy explain FILE "prompt"`, `offload policy reset-learning`."""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from offload.config.policy import load_policy
from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.errors import ConfigError
from offload.core.money import fmt_usd
from offload.core.tokens import request_upper_bound
from offload.infra.ledger.learning import TierStats, read_learned, reset_learned
from offload.policy.engine import (
    RouteRequest,
    TierEvidence,
    call_task,
    decide,
    family_of,
    learned_start,
    rule_tier,
)

if TYPE_CHECKING:
    from offload.core.pricing import PriceTable
    from offload.policy.models import Policy


def _price_table() -> PriceTable:
    # The same table `offload serve` would use, OFFLOAD_PRICING included.
    return load_prices(overlay=Settings.from_env().pricing_path)


def _known_models(table: PriceTable) -> Collection[str]:
    return set(table.models)


def _is_price_table(file: str) -> bool:
    """pricing.yaml sits beside the policies, so `policy check policies/*.yaml` meets it."""
    try:
        with open(file, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and "models" in doc and "tiers" not in doc


def cmd_check(files: list[str]) -> int:
    """Validate each file; print `ok ...` per good file, the error per bad one. 1 if any was bad."""
    known = _known_models(_price_table())
    status = 0
    for file in files:
        if _is_price_table(file):
            print(f"skip {file} (a price table, not a policy)")
            continue
        try:
            policy = load_policy(file, known_models=known)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            status = 1
            continue
        tiers = " ".join(f"{t}={m}" for t, m in policy.tiers.items())
        print(f"ok {file} ({policy.name}: {len(policy.rules)} rules, tiers {tiers})")
    return status


def _why_no_escalation(policy: Policy, tier: str) -> str:
    ladder = policy.escalation.ladder
    if not ladder or not policy.escalation.on or policy.escalation.max_steps == 0:
        return "escalation is off in this policy"
    if tier not in ladder:
        return f"{tier} is not on the ladder {', '.join(ladder)}"
    return f"{tier} is the top of the ladder"


def _fmt_stats(stats: dict[str, TierStats], ladder: tuple[str, ...]) -> str:
    parts = [f"{t} {stats[t].adequate}/{stats[t].known}" for t in ladder if t in stats]
    return ", ".join(parts) or "no judged answers"


def cmd_explain(
    file: str, prompt: str, *, task: str | None, difficulty: str | None, db: Path | str | None = None
) -> int:
    """Print the routing decision for one prompt, with its worst-case cost on each step."""
    table = _price_table()
    policy = load_policy(file, known_models=_known_models(table))
    tokens = request_upper_bound([prompt])
    given = task
    task = call_task(policy, given, prompt, prompt_tokens=tokens, difficulty=difficulty)
    inferred = task if task != given else None
    request = RouteRequest(prompt_tokens=tokens, task=task, difficulty=difficulty, prompt_text=prompt)
    learned = read_learned(db, policy.learning.window) if db is not None and policy.learning.enabled else {}
    family = family_of(task, difficulty)
    if family in learned:
        evidence = {t: TierEvidence(s.adequate, s.known) for t, s in learned[family].items()}
        tier, why = learned_start(policy, rule_tier(policy, request), evidence, draw=1.0, can_explore=False)
        if why:
            request = replace(request, learned_tier=tier, learned_reason=why)
    decision = decide(policy, request)
    if decision.ladder:
        escalation = f"{' -> '.join(decision.ladder)} (on: {', '.join(policy.escalation.on) or 'never'})"
    else:
        escalation = f"(none): {_why_no_escalation(policy, decision.tier)}"
    out = [
        f"policy     {policy.name} ({file})",
        f"tier       {decision.tier} -> {decision.model}",
        *([f"task       {inferred} (no --task given: read from the prompt's first word)"] if inferred else []),
        f"rule       {decision.rule}",
        f"reason     {decision.reason}",
        f"max_tokens {decision.max_tokens}",
        f"escalation {escalation}",
    ]
    if policy.learning.enabled:
        target = f"target {policy.learning.target}, min {policy.learning.min_samples} judged answers"
        out.append(f"learning   on ({target}, explore {policy.learning.explore})")
        for fam, stats in sorted(learned.items()):
            mark = "  <- this prompt" if fam == family else ""
            out.append(f"  {fam}: adequate {_fmt_stats(stats, policy.escalation.ladder)}{mark}")
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


def cmd_reset_learning(db: Path | str, family: str | None) -> int:
    n = reset_learned(db, family)
    where = "the PostgreSQL ledger" if isinstance(db, str) else db
    print(f"forgot {n} learned outcome(s){f' of {family}' if family else ''} in {where}")
    return 0
