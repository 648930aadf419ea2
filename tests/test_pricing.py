"""Pricing against figures worked out by hand.

Rates in pusd per token: $1/MTok = 1_000_000 pusd/token. So haiku-5-5 is input 100_000,
5m write 125_000, 1h write 200_000, read 10_000, output 500_000; its long-prompt rates are
500_000 / 625_000 / 1_000_000 / 50_000 / 2_500_000. Sonnet-5-5: 2_000_000 / 2_500_000 /
4_000_000 / 100_000 / 10_000_000. Opus-5-5: 4_000_000 ... output 20_000_000.
"""

from __future__ import annotations

from pathlib import Path

import anthropic.types
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload.config.pricing import load_prices
from offload.core.errors import ConfigError, UnpricedModelError
from offload.core.pricing import Usage
from offload_emulator.models import MODELS

T = load_prices()
HAIKU, SONNET, OPUS = "claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5"


def test_plain_call() -> None:
    # 1000 x 100_000 + 200 x 500_000
    assert T.cost(HAIKU, Usage(input_tokens=1000, output_tokens=200)) == 200_000_000


def test_cache_write_5m() -> None:
    # 10 x 2_000_000 + 2000 x 2_500_000 + 50 x 10_000_000
    assert T.cost(SONNET, Usage(input_tokens=10, cache_write_5m=2000, output_tokens=50)) == 5_520_000_000


def test_cache_write_1h() -> None:
    # 10 x 2_000_000 + 2000 x 4_000_000 + 50 x 10_000_000
    assert T.cost(SONNET, Usage(input_tokens=10, cache_write_1h=2000, output_tokens=50)) == 8_520_000_000


def test_cache_read() -> None:
    # 10 x 2_000_000 + 2000 x 100_000 + 50 x 10_000_000
    assert T.cost(SONNET, Usage(input_tokens=10, cache_read=2000, output_tokens=50)) == 720_000_000


def test_batch_halves_every_rate_including_cache() -> None:
    # 10 x 1_000_000 + 2000 x 1_250_000 + 50 x 5_000_000
    usage = Usage(input_tokens=10, cache_write_5m=2000, output_tokens=50)
    assert T.cost(SONNET, usage, batch=True) == 2_760_000_000
    # haiku cache read at batch rate: $0.005/MTok = 5_000 pusd/token; 100_000 x 5_000
    assert T.cost(HAIKU, Usage(cache_read=100_000), batch=True) == 500_000_000
    # one more token crosses the long-prompt rule: 100_001 x 25_000 (0.05 / 2)
    assert T.cost(HAIKU, Usage(cache_read=100_001), batch=True) == 2_500_025_000


def test_haiku_long_prompt_threshold_is_exclusive() -> None:
    at = Usage(input_tokens=60_000, cache_read=40_000, output_tokens=1000)  # prompt == 100_000
    # 60_000 x 100_000 + 40_000 x 10_000 + 1000 x 500_000
    assert T.cost(HAIKU, at) == 6_900_000_000
    over = Usage(input_tokens=60_001, cache_read=40_000, output_tokens=1000)  # prompt == 100_001
    # 60_001 x 500_000 + 40_000 x 50_000 + 1000 x 2_500_000: every token repriced, output too
    assert T.cost(HAIKU, over) == 34_500_500_000
    assert T.cost(HAIKU, over, batch=True) == 17_250_250_000


def test_long_prompt_counts_cache_writes_in_the_prompt() -> None:
    usage = Usage(input_tokens=1, cache_write_5m=50_000, cache_write_1h=50_000)  # prompt 100_001
    # 1 x 500_000 + 50_000 x 625_000 + 50_000 x 1_000_000
    assert T.cost(HAIKU, usage) == 81_250_500_000


def test_baseline_prices_the_same_caching_at_the_baseline_models_rates() -> None:
    usage = Usage(input_tokens=100, cache_write_5m=1000, cache_read=3000, output_tokens=200)
    # 100 x 4_000_000 + 1000 x 5_000_000 + 3000 x 200_000 + 200 x 20_000_000
    assert T.baseline_cost(OPUS, usage) == 10_000_000_000
    # long-prompt rule still applies: 100_001 x 500_000 + 10 x 2_500_000
    assert T.baseline_cost(HAIKU, Usage(input_tokens=100_001, output_tokens=10)) == 50_025_500_000


def test_baseline_counts_a_prefix_too_short_for_the_baseline_cache_as_input() -> None:
    # Haiku 5.5 caches from 2,048 tokens: a 1,500-token read elsewhere would be plain input there.
    usage = Usage(input_tokens=100, cache_read=1500, output_tokens=10)
    assert T.baseline_cost(HAIKU, usage) == 1600 * 100_000 + 10 * 500_000


def test_worst_case() -> None:
    # 1000 x 4_000_000 (1h write, the dearest input-side rate) + 500 x 10_000_000
    assert T.worst_case(SONNET, 1000, 500) == 9_000_000_000
    assert T.worst_case(SONNET, 1000, 500, batch=True) == 4_500_000_000
    # 100_000 prompt tokens stays below the long-prompt rule: 100_000 x 200_000 + 1000 x 500_000
    assert T.worst_case(HAIKU, 100_000, 1000) == 20_500_000_000
    # above it: 200_000 x 1_000_000 + 1000 x 2_500_000
    assert T.worst_case(HAIKU, 200_000, 1000) == 202_500_000_000


def test_opus_4x_and_5_share_prices_but_not_min_cacheable() -> None:
    # opus-4-8 prices: 1000 x 5_000_000 + 100 x 25_000_000. Minimums per the prompt-caching
    # docs (https://platform.claude.com/docs/en/build-with-claude/prompt-caching#cache-limitations).
    mins = {"claude-opus-4-6": 4096, "claude-opus-4-7": 2048, "claude-opus-4-8": 1024, "claude-opus-5": 512}
    for model, minimum in mins.items():
        assert T.cost(model, Usage(input_tokens=1000, output_tokens=100)) == 7_500_000_000
        assert T.min_cacheable(model) == minimum
    assert T.min_cacheable(HAIKU) == 2048
    assert T.min_cacheable("claude-sonnet-4-6") == 1024
    assert T.min_cacheable("claude-haiku-4-5-20251001") == T.min_cacheable("claude-haiku-4-5") == 4096
    assert T.has("claude-opus-5") and not T.has("gpt-4")
    assert "claude-fable-5-1" in T.models and "claude-opus-4-7" in T.models


def test_every_model_the_emulator_accepts_is_priced_with_its_minimum_cacheable_prefix() -> None:
    # One source: the emulator's model table (cited there); pricing.yaml must say the same,
    # for every id the emulator answers to, dated snapshot ids included.
    for model in MODELS:
        for name in (model.id, *model.dated_ids):
            assert T.has(name), name
            assert T.min_cacheable(name) == model.min_cacheable, name


def test_cache_gain_is_reads_saved_minus_write_premiums() -> None:
    # Sonnet 5.5: input 2_000_000, 5m write 2_500_000, 1h write 4_000_000, read 100_000 pusd/token.
    # 2000 reads save 2000 x 1_900_000; 1000 5m-written tokens cost 1000 x 500_000 extra.
    u = Usage(input_tokens=100, output_tokens=50, cache_write_5m=1000, cache_read=2000)
    assert T.cache_gain(SONNET, u) == 2000 * 1_900_000 - 1000 * 500_000 == 3_300_000_000
    # A 1h write never read again: a loss of 2_000_000 per token; halved at batch rates.
    written = Usage(input_tokens=10, output_tokens=5, cache_write_1h=1000)
    assert T.cache_gain(SONNET, written) == -2_000_000_000
    assert T.cache_gain(SONNET, written, batch=True) == -1_000_000_000
    assert T.cache_gain(SONNET, Usage(input_tokens=500, output_tokens=9)) == 0


def test_unpriced_model_is_an_error_never_zero() -> None:
    with pytest.raises(UnpricedModelError) as info:
        T.cost("claude-mystery-9", Usage(input_tokens=1))
    assert "claude-mystery-9" in str(info.value) and "pricing.yaml" in str(info.value)
    with pytest.raises(UnpricedModelError):
        T.worst_case("claude-mystery-9", 1, 1)


def test_usage_from_api_dict_and_sdk_object() -> None:
    raw = {
        "input_tokens": 3,
        "output_tokens": 7,
        "cache_creation_input_tokens": 10,
        "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 8},
        "cache_read_input_tokens": 5,
    }
    assert Usage.from_api(raw) == Usage(3, 7, 2, 8, 5)
    # a total with no breakdown counts as 5m writes; None counts as 0
    assert Usage.from_api(
        {"input_tokens": 1, "cache_creation_input_tokens": 9, "cache_read_input_tokens": None}
    ) == Usage(1, 0, 9, 0, 0)
    sdk = anthropic.types.Usage.model_validate(raw)
    assert Usage.from_api(sdk) == Usage(3, 7, 2, 8, 5)
    assert Usage(3, 7, 2, 8, 5).prompt_tokens == 18


# --- bad files ---------------------------------------------------------------------------

GOOD = """\
batch_multiplier: "0.5"
models:
  claude-x:
    as_of: "2026-10-21"
    input: "1"
    cache_write_5m: "1.25"
    cache_write_1h: "2"
    cache_read: "0.10"
    output: "{output}"
    min_cacheable_tokens: 1024
aliases: {{claude-y: {target}}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pricing.yaml"
    p.write_text(text)
    return p


def test_custom_file_loads(tmp_path: Path) -> None:
    t = load_prices(_write(tmp_path, GOOD.format(output="5", target="claude-x")))
    assert t.cost("claude-y", Usage(output_tokens=2)) == 10_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.format(output="5", target="claude-x").replace('output: "5"', "output: 0.50"),
            'models.claude-x.output: expected a decimal string like "0.50"',
        ),
        (
            GOOD.format(output="abc", target="claude-x"),
            'models.claude-x.output: expected a decimal string like "0.50"',
        ),
        (
            GOOD.format(output="0.0000001", target="claude-x"),
            "models.claude-x.output: 0.0000001 USD/MTok is not a whole number of picodollars",
        ),
        (
            GOOD.format(output="0.000001", target="claude-x"),
            "models.claude-x.output: 0.000001 USD/MTok x batch_multiplier 0.5 is not a whole number",
        ),
        (GOOD.format(output="5", target="claude-z"), "aliases.claude-y: points at 'claude-z'"),
        (
            GOOD.format(output="5", target="claude-x").replace("    output:", "    outptu:"),
            "models.claude-x.outptu: unknown field",
        ),
        (
            GOOD.format(output="5", target="claude-x").replace(
                "min_cacheable_tokens: 1024", "min_cacheable_tokens: -1"
            ),
            "models.claude-x.min_cacheable_tokens: expected a positive whole number",
        ),
        ("models: [1, 2", "not valid YAML"),
    ],
)
def test_bad_file_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_prices(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


# --- properties --------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=300_000)
usages = st.builds(Usage, counts, counts, counts, counts, counts)
models = st.sampled_from(T.models)


@given(models, usages, usages)
def test_cost_is_monotonic_and_bounded_by_worst_case(model: str, a: Usage, b: Usage) -> None:
    assert T.cost(model, a) <= T.cost(model, a + b)
    assert 2 * T.cost(model, a, batch=True) == T.cost(model, a)
    assert T.cost(model, a) <= T.worst_case(model, a.prompt_tokens, a.output_tokens)
    assert T.cost(model, a) <= T.baseline_cost(model, a) or a.cache_write_5m + a.cache_write_1h > 0


@given(st.sampled_from([m for m in T.models if T.price(m).long_prompt is None]), usages, usages)
def test_cost_is_additive_without_a_long_prompt_rule(model: str, a: Usage, b: Usage) -> None:
    assert T.cost(model, a + b) == T.cost(model, a) + T.cost(model, b)


def test_worst_case_reserves_cache_writes_at_the_ttl_the_request_asks_for() -> None:
    # Sonnet: input 2, 5m write 2.50, 1h write 4 USD/MTok
    assert T.worst_case(SONNET, 1000, 0) == 1000 * 4_000_000  # unknown: the dearest (1h) rate
    assert T.worst_case(SONNET, 1000, 0, ttls=frozenset({"5m"})) == 1000 * 2_500_000
    assert T.worst_case(SONNET, 1000, 0, ttls=frozenset()) == 1000 * 2_000_000  # no breakpoint: no write
    assert T.worst_case(SONNET, 1000, 0, ttls=frozenset({"5m", "1h"})) == 1000 * 4_000_000
