"""Any policy input either loads or raises ConfigError: never a stray exception from YAML or pydantic."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.config.policy import parse_policy
from offload.core.errors import ConfigError
from offload.policy import Policy, decide
from offload.policy.engine import RouteRequest

KEYS = [
    "name", "description", "tiers", "rules", "default_tier", "escalation", "budgets", "caching", "baseline",
    "max_tokens", "forced_tiers", "triage", "batch", "store_text", "when", "tier", "task", "difficulty",
    "input_tokens_over", "input_tokens_under", "prompt_matches", "ladder", "on", "max_steps", "session_usd",
    "daily_usd", "on_exceed", "warn_at", "ttl", "enabled", "cheap", "premium", "hard", "5m", "refuse",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(KEYS),
    st.sampled_from(["(", "[a-", "claude-haiku-5-5", "0.1", "1e400", "nan", "-0", "$2", "(?i)x", ""]),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), scalars), inner, max_size=5),
    ),
    max_leaves=25,
)

BASE: dict[str, Any] = {
    "name": "f",
    "tiers": {"cheap": "claude-haiku-5-5", "premium": "claude-opus-5-5"},
    "default_tier": "cheap",
    "baseline": "claude-opus-5-5",
}


def outcome(text: str) -> Policy | None:
    try:
        return parse_policy(text, "fuzz.yaml")
    except ConfigError as exc:
        assert "fuzz.yaml" in str(exc)
        return None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(BASE) + KEYS), values)
def test_near_valid_policies_load_or_raise_config_error(key: str, value: Any) -> None:
    doc = {**BASE, key: value}
    policy = outcome(yaml.safe_dump(doc, allow_unicode=True))
    if policy is not None:
        # a policy that loads must also route without error
        d = decide(policy, RouteRequest(prompt_tokens=10, prompt_text="x"))
        assert d.tier in policy.tiers


@settings(max_examples=200, deadline=None)
@given(values)
def test_arbitrary_documents_load_or_raise_config_error(value: Any) -> None:
    outcome(yaml.safe_dump(value, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}[]:,-'\"&*!|>#% \n\tab01.?")), max_size=60))
def test_arbitrary_text_loads_or_raises_config_error(text: str) -> None:
    outcome(text)


def test_recursive_yaml_alias_is_a_config_error() -> None:
    assert outcome("name: &a [*a]\n") is None
    assert outcome("[" * 5000 + "]" * 5000) is None


whens = st.fixed_dictionaries(
    {},
    optional={
        "task": st.one_of(st.sampled_from(["classify", "x"]), st.lists(st.sampled_from(["a", "b", 1]), max_size=3)),
        "difficulty": st.one_of(st.sampled_from(["easy", "medium", "hard", "extreme"]), st.lists(scalars, max_size=2)),
        "input_tokens_over": st.one_of(st.integers(-5, 2000), scalars),
        "input_tokens_under": st.one_of(st.integers(-5, 2000), scalars),
        "prompt_matches": st.sampled_from(["a+", "(", "(?i)x", "[", "\\b", "a{2,1}"]),
    },
)
rules = st.lists(
    st.fixed_dictionaries({"when": whens, "tier": st.sampled_from(["cheap", "premium", "nope"])}), max_size=4
)


@settings(max_examples=200, deadline=None)
@given(rules, st.integers(0, 3000), st.sampled_from([None, "easy", "medium", "hard"]), st.text(max_size=20))
def test_fuzzed_rules_load_or_raise_and_route(rule_list: list[Any], tokens: int, diff: str | None, text: str) -> None:
    policy = outcome(yaml.safe_dump({**BASE, "rules": rule_list}, allow_unicode=True))
    if policy is not None:
        d = decide(policy, RouteRequest(prompt_tokens=tokens, difficulty=diff, prompt_text=text, task="classify"))
        assert d.tier in ("cheap", "premium")
