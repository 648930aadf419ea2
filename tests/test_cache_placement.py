"""The placement rule, from prices alone: when does a 5m or 1h write repay its premium?"""

from __future__ import annotations

from offload.config.pricing import load_prices
from offload.core.cache_placement import Expect, Reuse, choose_ttl, net_gain, ordered, reuse_from_history
from offload.core.pricing import Rates
from offload.core.request import Breakpoints, Prompt, build_params, prefix_keys

# List-price ratios per token: write 1.25x (5m) / 2x (1h) input, read 0.1x.
R = Rates(input=1000, cache_write_5m=1250, cache_write_1h=2000, cache_read=100, output=5000)
MIN = 60.0


def test_a_prefix_never_seen_is_not_cached_without_a_structural_reason() -> None:
    assert choose_ttl(R, Reuse()) is None
    # A fan-out of three reads it right after the write: 3 x 0.9 saved against 0.25 paid.
    assert choose_ttl(R, Reuse(), Expect(reuses=3)) == "5m"


def test_second_use_within_five_minutes_writes_5m_and_a_slow_second_use_writes_nothing() -> None:
    assert choose_ttl(R, reuse_from_history([0.0], 2 * MIN)) == "5m"
    # 20 minutes apart, once: a 5m entry would expire, and 1h needs more than one read to pay.
    assert choose_ttl(R, reuse_from_history([0.0], 20 * MIN)) is None


def test_reads_that_come_more_than_five_minutes_apart_choose_1h_once_they_recur() -> None:
    times = [i * 20 * MIN for i in range(6)]
    assert choose_ttl(R, reuse_from_history(times, 6 * 20 * MIN)) == "1h"
    # The same count of uses seconds apart: 5m's smaller premium wins.
    fast = [i * 30.0 for i in range(6)]
    assert choose_ttl(R, reuse_from_history(fast, 6 * 30.0)) == "5m"


def test_break_even_is_derived_from_the_prices() -> None:
    # One certain read repays a 5m write (0.9 saved > 0.25 paid) but not a 1h write (0.9 < 1.0)...
    one = Expect(reuses=1)
    assert net_gain(R, "5m", Reuse(), one) == 1 * 900 - 250
    assert net_gain(R, "1h", Reuse(), one) == 900 - 1000 < 0
    # ...two reads more than five minutes apart repay 1h, and then nothing repays 5m.
    slow = Expect(reuses=2, gap_s=10 * MIN)
    assert net_gain(R, "1h", Reuse(), slow) == 2 * 900 - 1000 > 0
    assert net_gain(R, "5m", Reuse(), slow) < 0
    assert choose_ttl(R, Reuse(), slow) == "1h"
    # Cheaper writes move the line: at a 1.5x 1h write one read pays for it.
    cheap_1h = Rates(input=1000, cache_write_5m=1250, cache_write_1h=1500, cache_read=100, output=5000)
    assert choose_ttl(cheap_1h, Reuse(), Expect(reuses=1, gap_s=10 * MIN)) == "1h"


def test_best_effort_hits_count_misses_as_writes() -> None:
    # A batch at a 30% hit rate: 5m still pays (0.3 x 0.9 > 0.7 x 0.25), 1h does not (0.27 < 0.7).
    batch = Expect(reuses=99, gap_s=36.0, hit_rate=0.3)
    assert net_gain(R, "5m", Reuse(), batch) > 0 > net_gain(R, "1h", Reuse(), batch)
    assert choose_ttl(R, Reuse(), batch) == "5m"
    # A batch too sparse for 5m entries to survive, at a low hit rate: no breakpoint at all.
    assert choose_ttl(R, Reuse(), Expect(reuses=4, gap_s=720.0, hit_rate=0.3)) is None


def test_a_live_entry_is_read_whatever_the_forecast() -> None:
    reuse = reuse_from_history([0.0, 10.0], 100.0, ["5m", "5m"])
    assert reuse.warm_ttl == "5m" and choose_ttl(R, reuse) == "5m"
    expired = reuse_from_history([0.0, 10.0], 400.0, [None, "5m"])
    assert expired.warm_ttl is None
    # Only a use that placed a breakpoint refreshes an entry: the one written at 0 is gone at 305.
    assert reuse_from_history([0.0, 10.0], 305.0, ["5m", None]).warm_ttl is None
    assert reuse_from_history([0.0, 10.0], 305.0, ["5m", "5m"]).warm_ttl == "5m"


def test_ttl_order_lets_the_system_breakpoint_give_way() -> None:
    assert ordered("5m", "1h") == (None, "1h")
    assert ordered("1h", "5m") == ("1h", "5m") and ordered(None, "5m") == (None, "5m")


def test_build_params_places_only_the_breakpoints_it_is_given() -> None:
    docs = (("a.py", "x = 1\n" * 2000),)
    prompt = Prompt(prompt="q", system="S " * 3000, documents=docs)
    none = build_params("m", prompt, max_tokens=8, breakpoints=Breakpoints())
    assert "cache_control" not in str(none)
    only_docs = build_params("m", prompt, max_tokens=8, breakpoints=Breakpoints(content="5m"))
    assert "cache_control" not in only_docs["system"][0]
    assert only_docs["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    both = build_params("m", prompt, max_tokens=8, breakpoints=Breakpoints(system="1h", content="5m"))
    assert both["system"][0]["cache_control"]["ttl"] == "1h"


def test_prefix_keys_are_digests_per_model_and_skip_short_prefixes() -> None:
    docs = (("a.py", "x = 1\n" * 2000),)
    prompt = Prompt(prompt="q1", system="S " * 3000, documents=docs)
    system, content = prefix_keys("haiku", prompt, 1024)
    assert system and content and system != content and "S S" not in system + content
    # The per-call question is not part of either prefix; the model is.
    assert prefix_keys("haiku", Prompt(prompt="q2", system="S " * 3000, documents=docs), 1024) == (system, content)
    assert prefix_keys("sonnet", prompt, 1024)[0] != system
    assert prefix_keys("haiku", Prompt(prompt="q", system="short"), 1024) == (None, None)


def test_shipped_prices_keep_the_rule_of_thumb() -> None:
    # Every priced model: one read within 5m repays a 5m write; one read never repays a 1h write.
    prices = load_prices()
    for model in prices.models:
        rates = prices.price(model).rates
        assert net_gain(rates, "5m", Reuse(), Expect(reuses=1)) > 0, model
        assert net_gain(rates, "1h", Reuse(), Expect(reuses=1)) <= 0, model
