"""The pure routing engine: rule kinds, first match wins, forced tiers, downgrade, ladders, triage."""

from __future__ import annotations

import pytest

from offload.config.policy import load_policy, parse_policy
from offload.config.pricing import load_prices
from offload.config.settings import shipped
from offload.core.errors import BudgetExceededError, InputError
from offload.policy import Policy, RouteRequest, decide, should_escalate, worst_case_by_tier
from offload.policy.engine import TierEvidence, capped_max_tokens, inferred_task, judged_start, learned_start

POLICY = """
name: t
tiers: {cheap: claude-haiku-5-5, standard: claude-sonnet-5-5, premium: claude-opus-5-5}
rules:
  - {name: mech, when: {task: [classify, extract]}, tier: cheap}
  - {when: {difficulty: hard}, tier: premium}
  - {when: {difficulty: [medium]}, tier: standard}
  - {when: {input_tokens_over: 1000}, tier: standard}
  - {when: {input_tokens_under: 5, prompt_matches: '(?i)\\bsql\\b'}, tier: premium}
  - {when: {prompt_matches: '(?i)\\bsql\\b'}, tier: standard}
default_tier: cheap
max_tokens: {cheap: 100, standard: 200, premium: 300}
escalation: {ladder: [cheap, standard, premium], on: [max_tokens, refusal], max_steps: 2}
budgets: {daily_usd: 1, on_exceed: downgrade}
forced_tiers: [cheap, standard]
batch: {prefer_when_downgrading: true}
baseline: claude-opus-5-5
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY)


def req(**kw: object) -> RouteRequest:
    base: dict[str, object] = {"prompt_tokens": 10, "prompt_text": "hello"}
    base.update(kw)
    return RouteRequest(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "tier", "rule"),
    [
        ({"task": "classify"}, "cheap", "rules[0] mech {task: [classify, extract]}"),
        ({"difficulty": "hard"}, "premium", "rules[1] {difficulty: hard}"),
        ({"difficulty": "medium"}, "standard", "rules[2] {difficulty: medium}"),
        ({"prompt_tokens": 1001}, "standard", "rules[3] {input_tokens_over: 1000}"),
        ({"prompt_tokens": 1000}, "cheap", "default_tier"),  # "over" is strict
        ({"prompt_tokens": 4, "prompt_text": "an SQL join"}, "premium", None),
        ({"prompt_tokens": 5, "prompt_text": "an SQL join"}, "standard", "rules[5] {prompt_matches: '(?i)\\bsql\\b'}"),
        ({"prompt_text": "mysqladmin"}, "cheap", "default_tier"),
        ({"task": "write", "difficulty": "easy"}, "cheap", "default_tier"),
    ],
)
def test_each_rule_kind(policy: Policy, kw: dict[str, object], tier: str, rule: str | None) -> None:
    d = decide(policy, req(**kw))
    assert d.tier == tier
    assert d.model == policy.tiers[tier]
    assert d.max_tokens == {"cheap": 100, "standard": 200, "premium": 300}[tier]
    if rule is not None:
        assert d.rule == rule
    assert d.downgraded_from is None and not d.use_batch


def test_first_match_wins(policy: Policy) -> None:
    # matches rule 0 (cheap) and rule 3 (standard): the earlier rule decides
    d = decide(policy, req(task="extract", prompt_tokens=5000))
    assert (d.tier, d.rule) == ("cheap", "rules[0] mech {task: [classify, extract]}")
    assert "mech" in d.reason


def test_a_stated_difficulty_beats_a_task_rule(policy: Policy) -> None:
    # rule 0 (task: extract -> cheap) is listed first, but the caller said the work is hard
    d = decide(policy, req(task="extract", difficulty="hard"))
    assert (d.tier, d.rule) == ("premium", "rules[1] {difficulty: hard}")
    # a difficulty no rule names leaves the task rule in charge
    assert decide(policy, req(task="extract", difficulty="easy")).tier == "cheap"


def test_shipped_default_sends_hard_summaries_to_premium() -> None:
    shipped_policy = load_policy(shipped("default.yaml"))
    assert decide(shipped_policy, req(task="summarize", difficulty="hard")).tier == "premium"
    assert decide(shipped_policy, req(task="summarize")).tier == "cheap"


def test_empty_when_always_matches() -> None:
    p = parse_policy(POLICY.replace("rules:\n", "rules:\n  - {when: {}, tier: standard}\n"))
    assert decide(p, req(task="classify")).tier == "standard"
    assert decide(p, req(task="classify", difficulty="hard")).tier == "premium"  # a stated difficulty first


def test_caller_max_tokens_wins(policy: Policy) -> None:
    assert decide(policy, req(max_tokens=7)).max_tokens == 7


def test_forced_tier_allowed(policy: Policy) -> None:
    d = decide(policy, req(forced_tier="standard", task="classify"))
    assert (d.tier, d.rule, d.ladder) == ("standard", "forced", ("premium",))


def test_forced_tier_refused_names_allowed_tiers(policy: Policy) -> None:
    with pytest.raises(InputError) as info:
        decide(policy, req(forced_tier="premium"))
    assert "'premium'" in str(info.value) and "cheap, standard" in str(info.value)
    with pytest.raises(InputError):
        decide(policy, req(forced_tier="nonexistent"))


def test_ladder_from_chosen_tier_capped_by_max_steps(policy: Policy) -> None:
    assert decide(policy, req()).ladder == ("standard", "premium")
    assert decide(policy, req(difficulty="medium")).ladder == ("premium",)
    assert decide(policy, req(difficulty="hard")).ladder == ()
    one_step = parse_policy(POLICY.replace("max_steps: 2", "max_steps: 1"))
    assert decide(one_step, req()).ladder == ("standard",)
    none = parse_policy(POLICY.replace("max_steps: 2", "max_steps: 0"))
    assert decide(none, req()).ladder == ()


WORST = {"cheap": 10, "standard": 100, "premium": 1000}


def test_no_downgrade_when_it_fits(policy: Policy) -> None:
    d = decide(policy, req(difficulty="hard", worst_case_pusd=WORST, headroom_pusd=1000))
    assert d.tier == "premium" and d.downgraded_from is None


def test_downgrade_to_most_capable_tier_that_fits(policy: Policy) -> None:
    d = decide(policy, req(difficulty="hard", worst_case_pusd=WORST, headroom_pusd=999))
    assert (d.tier, d.downgraded_from) == ("standard", "premium")
    assert d.model == "claude-sonnet-5-5" and d.max_tokens == 200
    assert d.ladder == ("premium",)  # the service re-checks the budget before each step
    assert d.use_batch  # prefer_when_downgrading
    assert "downgraded from premium" in d.reason
    d = decide(policy, req(difficulty="hard", worst_case_pusd=WORST, headroom_pusd=99))
    assert (d.tier, d.downgraded_from) == ("cheap", "premium")


def test_unpriced_tier_is_never_a_downgrade_target(policy: Policy) -> None:
    d = decide(policy, req(difficulty="hard", worst_case_pusd={"cheap": 10, "premium": 1000}, headroom_pusd=500))
    assert d.tier == "cheap"


def test_nothing_fits_raises_budget_error(policy: Policy) -> None:
    with pytest.raises(BudgetExceededError) as info:
        decide(policy, req(difficulty="hard", worst_case_pusd=WORST, headroom_pusd=9))
    err = info.value
    assert err.scope == "headroom" and err.remaining_pusd == 9
    assert "'cheap'" in str(err) and "shorter prompt" in str(err)


def test_refuse_mode_never_downgrades() -> None:
    p = parse_policy(POLICY.replace("on_exceed: downgrade", "on_exceed: refuse"))
    d = decide(p, req(difficulty="hard", worst_case_pusd=WORST, headroom_pusd=0))
    assert d.tier == "premium" and d.downgraded_from is None


def test_forced_tier_is_downgraded_too(policy: Policy) -> None:
    d = decide(policy, req(forced_tier="standard", worst_case_pusd=WORST, headroom_pusd=50))
    assert (d.tier, d.downgraded_from, d.rule) == ("cheap", "standard", "forced")


def test_worst_case_by_tier_uses_the_decisions_max_tokens(policy: Policy) -> None:
    table = load_prices()
    wc = worst_case_by_tier(policy, 1000, table.worst_case)
    assert wc["premium"] == table.worst_case("claude-opus-5-5", 1000, 300)
    assert wc["cheap"] == table.worst_case("claude-haiku-5-5", 1000, 100)
    assert worst_case_by_tier(policy, 1000, table.worst_case, 5)["standard"] == table.worst_case(
        "claude-sonnet-5-5", 1000, 5
    )


def test_triage_only_when_difficulty_could_change_the_tier() -> None:
    p = parse_policy(POLICY + "triage: {tier: cheap}\n")
    assert decide(p, req()).triage_needed
    assert not decide(p, req(difficulty="easy")).triage_needed  # the caller said
    assert not decide(p, req(task="classify")).triage_needed  # rule 0 wins whatever the difficulty
    assert not decide(p, req(forced_tier="cheap")).triage_needed
    off = parse_policy(POLICY + "triage: {enabled: false, tier: cheap}\n")
    assert not decide(off, req()).triage_needed
    assert not decide(parse_policy(POLICY), req()).triage_needed


def test_should_escalate(policy: Policy) -> None:
    assert should_escalate(policy, "max_tokens")
    assert not should_escalate(policy, "schema_invalid")
    no_steps = parse_policy(POLICY.replace("max_steps: 2", "max_steps: 0"))
    assert not should_escalate(no_steps, "max_tokens")
    with pytest.raises(ValueError, match="unknown escalation trigger"):
        should_escalate(policy, "timeout")


def test_learned_start_climbs_past_a_tier_below_target_and_returns_when_a_lower_one_meets_it() -> None:
    p = parse_policy(POLICY + "learning: {enabled: true, target: 0.9, min_samples: 3, explore: 0.1}\n")
    bad_cheap = {"cheap": TierEvidence(0, 3), "standard": TierEvidence(3, 3)}
    assert learned_start(p, "cheap", bad_cheap, draw=0.5, can_explore=True)[0] == "standard"
    # too few samples: not trusted either way
    assert learned_start(p, "cheap", {"cheap": TierEvidence(0, 2)}, draw=0.5, can_explore=True)[0] == "cheap"
    # a seeded draw below `explore` tries one tier lower, if the answer can be judged
    assert learned_start(p, "cheap", bad_cheap, draw=0.05, can_explore=True)[0] == "cheap"
    assert learned_start(p, "cheap", bad_cheap, draw=0.05, can_explore=False)[0] == "standard"
    good_cheap = {"cheap": TierEvidence(9, 10)}
    assert learned_start(p, "premium", good_cheap, draw=0.5, can_explore=True)[0] == "cheap"


def test_judged_start_tries_lower_only_when_it_pays_counting_the_redo() -> None:
    p = parse_policy(POLICY)
    worst = {"cheap": 5, "standard": 100, "premium": 200}
    # no history: the prior (1 of 2) beats a price ratio of 5%
    assert judged_start(p, "standard", {}, worst)[0] == "cheap"
    # 0 of 38 adequate on cheap: p = 1/40 < 5%, stay
    assert judged_start(p, "standard", {"cheap": TierEvidence(0, 38)}, worst)[0] == "standard"
    # premium -> standard costs half: only when standard is adequate more than half the time
    assert judged_start(p, "premium", {"standard": TierEvidence(1, 2)}, worst)[0] == "premium"
    assert judged_start(p, "premium", {"standard": TierEvidence(6, 8)}, worst)[0] == "standard"
    off = parse_policy(POLICY + "learning: {judged_trials: false}\n")
    assert judged_start(off, "standard", {}, worst)[0] == "standard"


@pytest.mark.parametrize(
    ("prompt", "task"),
    [
        ("Classify this ticket: the refund never arrived.", "classify"),
        ("Please, extract the total and currency.", "extract"),
        ("[T0042] classify: deploy cache invoice", "classify"),
        ("  EXTRACT the fields below", "extract"),
        ("Why does my classify() helper fail?", None),  # named, but not as the job
        ("Do not classify yet: find the root cause", None),
        ("classify(ticket) raises KeyError", None),  # code, not an instruction
        ("extract_rows(rows) is slow", None),
        ("classify-ticket(x) panics", None),  # a compound name is not the label
        ("id,classify,score", None),  # a CSV header
        ("Summarize this log", None),  # no rule of this policy tests `summarize`
        ("Write a test.\nThen classify the failures.", None),
        ("", None),
    ],
)
def test_a_prompt_whose_first_word_names_a_rule_label_is_treated_as_that_task(
    policy: Policy, prompt: str, task: str | None
) -> None:
    assert inferred_task(policy, prompt, prompt_tokens=10, difficulty=None) == task


def test_an_inferred_label_is_kept_only_where_no_rule_routes_the_call_without_it(policy: Policy) -> None:
    # The label is dropped, not just outranked: the call then learns and is capped as unlabelled.
    assert inferred_task(policy, "Classify the slow sql queries", prompt_tokens=10, difficulty=None) is None
    assert inferred_task(policy, "Classify it", prompt_tokens=5000, difficulty=None) is None  # input_tokens_over
    assert inferred_task(policy, "Classify it", prompt_tokens=10, difficulty="hard") is None  # difficulty first
    assert inferred_task(policy, "Classify it", prompt_tokens=10, difficulty="easy") == "classify"  # no easy rule
    sample = "Classify it; the sql is below"  # a batch: the template names the task, its first request is routed
    assert inferred_task(policy, "Classify it", prompt_tokens=10, difficulty=None, prompt_text=sample) is None


def test_no_label_is_inferred_where_triage_would_guess_the_difficulty() -> None:
    triaged = parse_policy(POLICY + "triage: {enabled: true, tier: cheap}\n")
    assert inferred_task(triaged, "Classify it", prompt_tokens=10, difficulty=None) is None
    assert inferred_task(triaged, "Classify it", prompt_tokens=10, difficulty="easy") == "classify"
    # Triage on, but no rule tests a difficulty: it would not run, so the label routes.
    no_difficulty_rules = "\n".join(line for line in POLICY.splitlines() if "difficulty" not in line)
    pointless = parse_policy(no_difficulty_rules + "\ntriage: {enabled: true, tier: cheap}\n")
    assert inferred_task(pointless, "Classify it", prompt_tokens=10, difficulty=None) == "classify"


def test_task_inference_can_be_turned_off_and_needs_task_rules() -> None:
    def infer(policy: Policy, prompt: str) -> str | None:
        return inferred_task(policy, prompt, prompt_tokens=10, difficulty=None)

    assert infer(parse_policy(POLICY + "infer_task: false\n"), "Classify this ticket") is None
    task_rule = "  - {name: mech, when: {task: [classify, extract]}, tier: cheap}\n"
    no_task_rules = parse_policy(POLICY.replace(task_rule, ""))
    assert no_task_rules.task_labels == frozenset()
    assert infer(no_task_rules, "Classify this ticket") is None
    mixed_case = parse_policy(POLICY.replace("[classify, extract]", "[Classify, extract]"))
    assert infer(mixed_case, "classify this") == "Classify"  # the label as the rule spells it


def test_a_learned_output_cap_cuts_only_a_first_try_that_can_climb() -> None:
    policy = parse_policy(POLICY)
    assert capped_max_tokens(policy, "cheap", None, 7) == 7
    assert capped_max_tokens(policy, "premium", None, 7) == 300  # the top rung: a cut answer would be final
    no_trigger = parse_policy(POLICY.replace("on: [max_tokens, refusal]", "on: [refusal]"))
    assert capped_max_tokens(no_trigger, "cheap", None, 7) == 100
    assert worst_case_by_tier(policy, 10, lambda model, i, o: o, cap=7) == {"cheap": 7, "standard": 7, "premium": 300}
    # Comparing two tiers' prices (judged_start) needs the same answer length on both: pricing the
    # uncut top rung at its full max_tokens made every lower tier look cheap (bench: judging host
    # 1.125x -> 1.205x the oracle, more redos).
    same_length = worst_case_by_tier(policy, 10, lambda model, i, o: o, cap=7, as_sent=False)
    assert same_length == {"cheap": 7, "standard": 7, "premium": 7}
