"""Policy files: every shipped policy loads; bad files name the file, the field path and the fix."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from offload.config.policy import load_policy, parse_policy
from offload.config.pricing import load_prices
from offload.core.errors import ConfigError

POLICIES = Path(__file__).resolve().parent.parent / "policies"
SHIPPED = sorted(p for p in POLICIES.glob("*.yaml") if p.name != "pricing.yaml")

MINIMAL = """
name: t
tiers: {cheap: claude-haiku-5-5, premium: claude-opus-5-5}
default_tier: cheap
baseline: claude-opus-5-5
"""


def test_all_four_policies_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= {"default", "frugal", "quality", "legacy-4x"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_loads_with_priced_models(path: Path) -> None:
    policy = load_policy(path, known_models=load_prices().models)
    assert policy.name == path.stem
    assert policy.default_tier in policy.tiers
    # the YAML 1.1 trap: `on:` must stay a key, not become the boolean True
    assert policy.escalation.on


def test_default_policy_matches_the_design() -> None:
    p = load_policy(POLICIES / "default.yaml")
    assert p.tiers == {"cheap": "claude-haiku-5-5", "standard": "claude-sonnet-5-5", "premium": "claude-opus-5-5"}
    assert p.escalation.ladder == ("cheap", "standard", "premium")
    assert p.escalation.max_steps == 2
    assert p.budgets.on_exceed == "downgrade"
    assert p.budgets.limits_pusd() == {"session": 2 * 10**12, "daily": 20 * 10**12, "monthly": 300 * 10**12}
    assert (p.caching.ttl, p.caching.batch_ttl) == ("5m", "1h")
    assert p.baseline == "claude-opus-5-5"
    assert p.store_text is False


def test_frugal_refuses_and_cannot_force_premium() -> None:
    p = load_policy(POLICIES / "frugal.yaml")
    assert p.budgets.on_exceed == "refuse"
    assert "premium" not in p.forceable
    assert p.escalation.max_steps == 1


def test_legacy_uses_4x_models() -> None:
    p = load_policy(POLICIES / "legacy-4x.yaml")
    assert set(p.tiers.values()) == {"claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"}
    assert p.baseline == "claude-opus-4-8"


def test_yaml_float_dollars_are_exact_decimals() -> None:
    p = parse_policy(MINIMAL + "budgets: {session_usd: 0.1, daily_usd: '0.30', monthly_usd: 7}\n")
    assert p.budgets.session_usd == Decimal("0.1")
    assert p.budgets.limits_pusd() == {"session": 10**11, "daily": 3 * 10**11, "monthly": 7 * 10**12}
    assert p.budgets.warn_at == (Decimal("0.8"),)


def test_defaults_for_a_minimal_policy() -> None:
    p = parse_policy(MINIMAL)
    assert p.forceable == ("cheap", "premium")
    assert p.rules == ()
    assert p.budgets.limits_pusd() == {}
    assert p.max_tokens_for("cheap") == 4096
    assert p.max_tokens_for("cheap", 100) == 100


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


BAD = [
    ("syntax", "name: [unclosed\n", ["YAML syntax error", "line 2"]),
    ("top-level list", "- a\n- b\n", ["expected a mapping of policy fields", "got a list"]),
    ("empty", "", ["got an empty file"]),
    ("unknown top key", MINIMAL + "budget: {}\n", ["budget: unknown key", "allowed keys here:", "budgets"]),
    (
        "unknown nested key",
        MINIMAL + "rules:\n  - {when: {task: [a]}, tier: cheap}\n  - {when: {dificulty: hard}, tier: cheap}\n",
        ["rules[1].when.dificulty: unknown key", "difficulty, input_tokens_over"],
    ),
    (
        "bad difficulty",
        MINIMAL + "rules:\n  - {when: {}, tier: cheap}\n  - {when: {}, tier: cheap}\n"
        "  - {when: {difficulty: extreme}, tier: cheap}\n",
        ["rules[2].when.difficulty: expected one of easy, medium, hard, got 'extreme'"],
    ),
    (
        "bad tier reference",
        MINIMAL + "rules:\n  - {when: {difficulty: hard}, tier: premum}\n",
        ["rules[0].tier: unknown tier 'premum'; defined tiers are cheap, premium"],
    ),
    ("bad default tier", MINIMAL.replace("default_tier: cheap", "default_tier: nope"), ["default_tier: unknown tier"]),
    (
        "bad ladder tier",
        MINIMAL + "escalation: {ladder: [cheap, huge], max_steps: 1}\n",
        ["escalation.ladder[1]: unknown tier 'huge'"],
    ),
    ("ladder duplicate", MINIMAL + "escalation: {ladder: [cheap, cheap]}\n", ["escalation.ladder[1]", "twice"]),
    ("forced tier", MINIMAL + "forced_tiers: [gold]\n", ["forced_tiers[0]: unknown tier 'gold'"]),
    ("max_tokens key", MINIMAL + "max_tokens: {mid: 10}\n", ["max_tokens.mid: unknown tier"]),
    ("triage tier", MINIMAL + "triage: {tier: mid}\n", ["triage.tier: unknown tier"]),
    (
        "bad regex",
        MINIMAL + "rules:\n  - {when: {prompt_matches: '(unclosed'}, tier: cheap}\n",
        ["rules[0].when.prompt_matches: not a valid regular expression"],
    ),
    ("wrong type", MINIMAL + "escalation: {max_steps: two}\n", ["escalation.max_steps: expected a whole number"]),
    ("bool is not int", MINIMAL + "escalation: {max_steps: true}\n", ["escalation.max_steps"]),
    ("bad trigger", MINIMAL + "escalation: {on: [timeout]}\n", ["escalation.on[0]: expected one of max_tokens"]),
    ("bad ttl", MINIMAL + "caching: {ttl: 10m}\n", ["caching.ttl: expected one of 5m, 1h, got '10m'"]),
    (
        "bad on_exceed",
        MINIMAL + "budgets: {on_exceed: warn}\n",
        ["budgets.on_exceed: expected one of refuse, downgrade"],
    ),
    ("negative dollars", MINIMAL + "budgets: {daily_usd: -1}\n", ["budgets.daily_usd", "0 or more"]),
    ("sub-picodollar", MINIMAL + "budgets: {daily_usd: '0.0000000000001'}\n", ["budgets.daily_usd", "picodollar"]),
    ("warn_at range", MINIMAL + "budgets: {warn_at: [0.5, 1.5]}\n", ["budgets.warn_at[1]", "(0, 1]"]),
    ("missing field", "name: t\ntiers: {a: m}\ndefault_tier: a\n", ["baseline: required field is missing"]),
    (
        "empty token range",
        MINIMAL + "rules:\n  - {when: {input_tokens_over: 10, input_tokens_under: 11}, tier: cheap}\n",
        ["rules[0].when.input_tokens_under"],
    ),
    ("no tiers", "name: t\ntiers: {}\ndefault_tier: a\nbaseline: m\n", ["tiers: must name at least one tier"]),
]


@pytest.mark.parametrize(("text", "needles"), [(t, n) for _, t, n in BAD], ids=[c[0] for c in BAD])
def test_bad_policy_names_file_and_field(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_unknown_model_names_pricing_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("claude-haiku-5-5", "claude-haiku-9"))
    load_policy(path)  # fine without a price table to check against
    with pytest.raises(ConfigError) as info:
        load_policy(path, known_models=load_prices().models)
    message = str(info.value)
    assert str(path) in message and "tiers.cheap" in message
    assert "'claude-haiku-9'" in message and "pricing.yaml" in message


def test_several_problems_are_all_listed(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "caching: {ttl: 2h, batch_ttl: 3h}\n")
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert "2 problems" in message and "caching.ttl" in message and "caching.batch_ttl" in message


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_policy(tmp_path / "nope.yaml")
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_policy(path)


def test_yes_no_on_off_stay_strings() -> None:
    p = parse_policy(MINIMAL.replace("name: t", "name: no") + "rules: [{when: {task: [on, off]}, tier: cheap}]\n")
    assert p.name == "no"
    assert p.rules[0].when.task == ("on", "off")
