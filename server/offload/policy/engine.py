"""Routing decisions: request + policy + budget headroom -> `RouteDecision`. Pure: no I/O, no clock.

The service layer (routed.py) prices each tier's worst case and reads the budget headroom from
the ledger, then asks `decide`. It re-checks the budget before every escalation step, so the
ladder returned here is only the order to try, not a promise that each step is affordable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from offload.core.errors import BudgetExceededError, InputError
from offload.core.money import fmt_usd
from offload.policy.models import DIFFICULTIES, TRIGGERS, Policy


@dataclass(frozen=True)
class RouteRequest:
    """What the engine needs to know about one call.

    `worst_case_pusd[tier]` is the most the call could cost on that tier: price it with
    `worst_case_by_tier` so it uses the same max_tokens the decision will. `headroom_pusd` is the
    smallest remaining budget across scopes (None: no budget set), `headroom_scope` the budget it
    comes from (session, daily, monthly, user, project or team), named in refusals. Both None: no downgrade check.
    """

    prompt_tokens: int
    task: str | None = None
    difficulty: str | None = None
    forced_tier: str | None = None
    prompt_text: str = ""
    worst_case_pusd: Mapping[str, int] | None = None
    headroom_pusd: int | None = None
    max_tokens: int | None = None  # the caller's explicit max_tokens, else the policy's per tier
    headroom_scope: str | None = None
    headroom_detail: str | None = None  # the tightest budget in words (limit, spend), for refusals
    redo_tier: str | None = None  # a redo of an answer: one tier above it, whatever `forced_tiers` says
    learned_tier: str | None = None  # where learning says this family should start (see `learned_start`)
    learned_reason: str = ""
    difficulty_stated: bool = True  # False: `difficulty` is triage's guess, not the caller's word


@dataclass(frozen=True)
class RouteDecision:
    tier: str
    model: str
    max_tokens: int
    rule: str  # "rules[1] {task: [classify]}", "default_tier" or "forced"
    reason: str  # one short human line
    ladder: tuple[str, ...]  # tiers to escalate to next, in order, at most max_steps
    downgraded_from: str | None = None
    use_batch: bool = False
    triage_needed: bool = False


def _match(
    policy: Policy, req: RouteRequest, difficulty: str | None, *, stated: bool = True
) -> tuple[str, str, int | None]:
    """(tier, rule label, rule index) of the first matching rule, else the default tier.

    A stated difficulty beats a task-type rule: when the caller gives one, the rules that test
    difficulty are tried first (in file order), so `task: summarize, difficulty: hard` is not
    sent to the cheap tier by a `task: [summarize]` rule listed above the `hard` one. A difficulty
    guessed by triage is weaker evidence than a task label: it keeps file order.
    """
    order = list(range(len(policy.rules)))
    if difficulty is not None and stated and req.difficulty_stated:
        order.sort(key=lambda i: policy.rules[i].when.difficulty is None)
    for i in order:
        rule = policy.rules[i]
        if rule.when.matches(
            prompt_tokens=req.prompt_tokens, task=req.task, difficulty=difficulty, prompt_text=req.prompt_text
        ):
            return rule.tier, policy.rule_label(i), i
    return policy.default_tier, "default_tier", None


def rule_tier(policy: Policy, req: RouteRequest) -> str:
    """The tier the rules pick for `req` (before learning, forcing or budget downgrades)."""
    return _match(policy, req, req.difficulty)[0]


def _needs_triage(policy: Policy, req: RouteRequest, tier: str) -> bool:
    # Triage is worth a call only if knowing the difficulty could change the tier.
    if policy.triage is None or not policy.triage.enabled or req.difficulty is not None:
        return False
    return any(_match(policy, req, d, stated=False)[0] != tier for d in DIFFICULTIES)


def _ladder_after(policy: Policy, tier: str) -> tuple[str, ...]:
    ladder = policy.escalation.ladder
    if tier not in ladder:
        return ()
    start = ladder.index(tier) + 1
    return ladder[start : start + policy.escalation.max_steps]


def _fits(req: RouteRequest, tier: str) -> bool:
    assert req.worst_case_pusd is not None and req.headroom_pusd is not None
    cost = req.worst_case_pusd.get(tier)
    # A tier the caller did not price cannot be shown to fit, so it is never chosen for a downgrade.
    return cost is not None and cost <= req.headroom_pusd


def _downgrade(policy: Policy, req: RouteRequest, tier: str) -> str | None:
    """The most capable tier below `tier` on the ladder that fits the headroom, if any."""
    ladder = policy.escalation.ladder
    below = ladder[: ladder.index(tier)] if tier in ladder else ladder
    for candidate in reversed(below):
        if _fits(req, candidate):
            return candidate
    return None


def _no_tier_fits(policy: Policy, req: RouteRequest, tier: str) -> BudgetExceededError:
    assert req.worst_case_pusd is not None and req.headroom_pusd is not None
    priced = {t: c for t, c in req.worst_case_pusd.items() if t in policy.tiers}
    cheapest = min(priced, key=priced.__getitem__, default=tier)
    worst = fmt_usd(priced[cheapest]) if cheapest in priced else "unknown"
    scope = req.headroom_scope
    room = (
        f"the {req.headroom_detail or f'{scope} budget'} has {fmt_usd(req.headroom_pusd)} left"
        if scope
        else f"budget headroom is {fmt_usd(req.headroom_pusd)}"
    )
    return BudgetExceededError(
        f"{room} but even tier {cheapest!r} could cost up to "
        f"{worst} for this call ({req.prompt_tokens} input tokens + max_tokens); send a shorter prompt "
        "or a lower max_tokens, or wait for the budget to reset (see budget_status)",
        scope=scope or "headroom",
        remaining_pusd=req.headroom_pusd,
        resets_at=None,
    )


def _no_redo_fits(req: RouteRequest, tier: str) -> BudgetExceededError:
    assert req.worst_case_pusd is not None and req.headroom_pusd is not None
    scope = req.headroom_scope
    return BudgetExceededError(
        f"a redo on tier {tier!r} could cost up to {fmt_usd(req.worst_case_pusd.get(tier, 0))}, more than the "
        f"{scope or 'budget'} headroom of {fmt_usd(req.headroom_pusd)}; the earlier answer stands. "
        "Wait for the budget to reset (see budget_status), or resend the prompt with a lower max_tokens",
        scope=scope or "headroom",
        remaining_pusd=req.headroom_pusd,
        resets_at=None,
    )


def decide(policy: Policy, req: RouteRequest) -> RouteDecision:
    if req.redo_tier is not None:
        tier, rule = req.redo_tier, "redo"
        reason = f"the host judged the previous answer wrong, so one tier up: {tier}"
    elif req.forced_tier is not None:
        if req.forced_tier not in policy.forceable:
            raise InputError(
                f"tier={req.forced_tier!r} is not allowed by policy {policy.name!r}; "
                f"send one of {', '.join(policy.forceable)}, or omit tier to let the policy route"
            )
        tier, rule = req.forced_tier, "forced"
        reason = f"caller forced tier {tier}"
    else:
        tier, rule, matched = _match(policy, req, req.difficulty)
        if matched is None:
            reason = f"no rule matched, so the default tier {tier}"
        else:
            reason = f"rule {policy.rules[matched].name or f'rules[{matched}]'} matched, so tier {tier}"
        if req.learned_tier is not None and req.learned_tier != tier:
            tier, rule = req.learned_tier, f"learned ({rule})"
            reason += f"; {req.learned_reason}"

    rule_tier = tier
    downgraded_from: str | None = None
    if (
        policy.budgets.on_exceed == "downgrade"
        and req.headroom_pusd is not None
        and req.worst_case_pusd is not None
        and not _fits(req, tier)
    ):
        if req.redo_tier is not None:
            # A redo below its tier would pay again for the tier whose answer the host judged wrong.
            raise _no_redo_fits(req, tier)
        lower = _downgrade(policy, req, tier)
        if lower is None:
            raise _no_tier_fits(policy, req, tier)
        downgraded_from, tier = tier, lower
        reason += f"; downgraded from {downgraded_from} to fit {fmt_usd(req.headroom_pusd)} of budget headroom"

    return RouteDecision(
        tier=tier,
        model=policy.tiers[tier],
        max_tokens=policy.max_tokens_for(tier, req.max_tokens),
        rule=rule,
        reason=reason,
        ladder=_ladder_after(policy, tier),
        downgraded_from=downgraded_from,
        use_batch=downgraded_from is not None and policy.batch.prefer_when_downgrading,
        triage_needed=req.forced_tier is None
        and req.redo_tier is None
        and req.learned_tier is None
        and _needs_triage(policy, req, rule_tier),
    )


def should_escalate(policy: Policy, trigger: str) -> bool:
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown escalation trigger {trigger!r}; known: {', '.join(TRIGGERS)}")
    return policy.escalation.max_steps > 0 and trigger in policy.escalation.on


def worst_case_by_tier(
    policy: Policy,
    prompt_tokens: int,
    worst_case: Callable[[str, int, int], int],
    max_tokens: int | None = None,
    cap: int | None = None,
    *,
    as_sent: bool = True,
) -> dict[str, int]:
    """Each tier's worst-case cost, via `worst_case(model, input_tokens, max_tokens)`
    (e.g. `PriceTable.worst_case`), with the max_tokens `decide` would pick for that tier,
    cut to `cap` (a learned output cap on a family's first try) where a first try there is cut.
    `as_sent=False` cuts every tier to `cap`: the price of an answer of the family's usual length
    on each tier, which is what comparing two tiers' costs needs (`judged_start`)."""
    return {
        tier: worst_case(model, prompt_tokens, capped_max_tokens(policy, tier, max_tokens, cap, anywhere=not as_sent))
        for tier, model in policy.tiers.items()
    }


def capped_max_tokens(
    policy: Policy, tier: str, max_tokens: int | None, cap: int | None, *, anywhere: bool = False
) -> int:
    """A first try's max_tokens, cut to a learned output cap only where an answer cut there climbs to
    a rung that gets the full length: on the top rung (or with max_tokens not an escalation trigger)
    a cut answer would be the host's answer, and its redo would be refused. `anywhere`: on every tier."""
    limit = policy.max_tokens_for(tier, max_tokens)
    climbs = anywhere or (_ladder_after(policy, tier) and should_escalate(policy, "max_tokens"))
    return limit if cap is None or not climbs else min(limit, cap)


def tier_above(policy: Policy, tier: str) -> str | None:
    """The next tier up the escalation ladder (None at the top, or for a tier not on it)."""
    ladder = policy.escalation.ladder
    if tier not in ladder or tier == ladder[-1]:
        return None
    return ladder[ladder.index(tier) + 1]


# The job a prompt names is its first word, in the imperative ("Classify this ticket: ...",
# "Please summarize ...", "[T12] extract: ..."). A label word further in, or one followed by "(",
# "_" or "-" (code, a compound), is more often the subject than the job: "Why does trim() panic".
_FIRST_WORD = re.compile(
    r"\s*(?:\[[^\]\n]{0,40}\]\s*)*(?:please\b[\s,:]*)?([A-Za-z][A-Za-z-]*)(?![\w(-])", re.IGNORECASE
)
LEAD_CHARS = 400  # where that first word is looked for: never a scan of a whole large prompt


def inferred_task(
    policy: Policy, prompt: str, *, prompt_tokens: int, difficulty: str | None, prompt_text: str | None = None
) -> str | None:
    """The task label a call sent without one is treated as, or None.

    Its prompt's first word (after a `[tag]` or "please") must be a label some rule tests (returned
    as that rule spells it), and the label must be what routes the call: no rule may match without
    it (a `prompt_matches` rule, a stated difficulty), and triage must not be about to guess the
    difficulty. Otherwise the call stays unlabelled, so neither its learning record nor its output
    cap is another task's. Off with `infer_task: false`. Labels of letters and hyphens only.
    `prompt_text`: what rules match against, when not `prompt` (a batch: its first request).
    """
    if not policy.infer_task:
        return None
    found = _FIRST_WORD.match(prompt[:LEAD_CHARS])
    label = None if found is None else policy.task_label(found.group(1))
    if label is None:
        return None
    text = prompt if prompt_text is None else prompt_text
    unlabelled = RouteRequest(prompt_tokens=prompt_tokens, difficulty=difficulty, prompt_text=text)
    tier, _, matched = _match(policy, unlabelled, difficulty)
    if matched is not None or _needs_triage(policy, unlabelled, tier):
        return None
    return label


def call_task(
    policy: Policy,
    given: str | None,
    prompt: str,
    *,
    prompt_tokens: int,
    difficulty: str | None,
    forced_tier: str | None = None,
    prompt_text: str | None = None,
) -> str | None:
    """The task a call is routed and learned under: the one it was given, else (a blank one counts as
    none: hosts fill optional arguments with "") the one its prompt names (`inferred_task`), unless
    the caller forced the tier, when nothing routes by it and it must not cap the answer."""
    if (given or "").strip() or forced_tier is not None:
        return given
    found = inferred_task(policy, prompt, prompt_tokens=prompt_tokens, difficulty=difficulty, prompt_text=prompt_text)
    return found or given


def family_of(task: str | None, difficulty: str | None) -> str:
    """What learning groups answers by: the task label, and the stated difficulty when there is one."""
    base = (task or "").strip().lower() or "*"
    return f"{base}@{difficulty}" if difficulty else base


@dataclass(frozen=True)
class TierEvidence:
    adequate: int
    known: int


def learned_start(
    policy: Policy, base: str, stats: Mapping[str, TierEvidence], *, draw: float, can_explore: bool
) -> tuple[str, str]:
    """(tier, reason): where a family starts given what its answers showed on each ladder tier.

    From `base` (the rules' tier): climb while the tier is known to miss the target, then drop to
    the cheapest lower tier known to meet it. With probability `explore` (`draw` < explore) and
    when the answer can be judged, start one tier lower still, so a family can move back down.
    """
    learning = policy.learning
    ladder = policy.escalation.ladder
    if not learning.enabled or base not in ladder:
        return base, ""
    target, need = float(learning.target), learning.min_samples

    def known(tier: str) -> TierEvidence | None:
        e = stats.get(tier)
        return e if e is not None and e.known >= need else None

    def good(tier: str) -> bool:
        e = known(tier)
        return e is not None and e.adequate >= target * e.known

    def fmt(tier: str) -> str:
        e = stats.get(tier)
        return f"{tier} {e.adequate}/{e.known}" if e else f"{tier} no data"

    i = ladder.index(base)
    while i < len(ladder) - 1 and known(ladder[i]) is not None and not good(ladder[i]):
        i += 1
    for j in range(i):
        if good(ladder[j]):
            i = j
            break
    tier = ladder[i]
    reason = "" if tier == base else f"learned: {fmt(tier)} adequate (target {learning.target})"
    if tier != base and ladder.index(tier) > ladder.index(base):
        reason = f"learned: {fmt(base)} adequate, below target {learning.target}, so {tier}"
    if can_explore and i > 0 and draw < float(learning.explore):
        tier = ladder[i - 1]
        reason = f"exploring {tier} ({fmt(tier)} adequate) to see if it now meets the target"
    return tier, reason


def judged_start(
    policy: Policy, tier: str, stats: Mapping[str, TierEvidence], worst_case_pusd: Mapping[str, int] | None
) -> tuple[str, str]:
    """(tier, reason) for a host that judges answers: start one tier lower when that pays on average.

    Starting lower costs the lower call, plus the call on `tier` when the host redoes it:
    c_low + (1 - p) * c_high. That beats c_high when p * c_high > c_low, where p is the lower
    tier's observed share of adequate answers for this family (with one success and one failure
    as a prior, so a family with no history is tried once cheaply and learned from).
    """
    ladder = policy.escalation.ladder
    if not policy.learning.judged_trials or tier not in ladder or ladder.index(tier) == 0 or not worst_case_pusd:
        return tier, ""
    low = ladder[ladder.index(tier) - 1]
    c_low, c_high = worst_case_pusd.get(low), worst_case_pusd.get(tier)
    if not c_low or not c_high:
        return tier, ""
    e = stats.get(low) or TierEvidence(0, 0)
    if (e.adequate + 1) * c_high <= c_low * (e.known + 2):
        return tier, ""
    share = f"{e.adequate}/{e.known} adequate" if e.known else "no history"
    return low, f"the host judges answers: {low} first ({share}, {c_low * 100 // c_high}% of {tier}'s price)"
