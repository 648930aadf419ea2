"""The baseline is the same request on the baseline model with the caching that model would have had.

offload spreads a task family over tiers, each with its own cache and its own placement history,
so a tier's first call of a family may send the shared system prompt uncached. The baseline model
would have had every earlier call of the family and read it from its cache: the baseline of such a
call prices the system prompt as a read. (Measured on bench_quality, seed 12, hinting host: the
reported baseline was 4.6% above the same stream run on the baseline model; 1.3% after.)
"""

from __future__ import annotations

from typing import Any

from offload.config.pricing import load_prices
from offload.core.baseline_cache import BaselineCache
from offload.core.pricing import Usage

T = load_prices()
OPUS = "claude-opus-5-5"
SYSTEM = "You help a coding agent. " * 400


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def params(system: str = SYSTEM, *, marked: bool, document: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": system}
    if marked:
        block["cache_control"] = {"type": "ephemeral"}
    content: list[dict[str, Any]] = [{"type": "text", "text": "the question"}]
    if document:
        content.insert(0, {"type": "text", "text": "<document/>", "cache_control": {"type": "ephemeral"}})
    return {"model": "m", "system": [block], "messages": [{"role": "user", "content": content}]}


WRITE = Usage(input_tokens=20, cache_write_5m=3000, output_tokens=10)
UNCACHED = Usage(input_tokens=3020, output_tokens=10)
AS_READ = Usage(input_tokens=20, cache_read=3000, output_tokens=10)


def test_a_system_prompt_the_baseline_holds_sent_uncached_is_priced_as_a_read() -> None:
    cache = BaselineCache(clock=Clock())
    assert cache.cost(T, OPUS, params(marked=True), WRITE) == T.baseline_cost(OPUS, WRITE)
    assert cache.cost(T, OPUS, params(marked=False), UNCACHED) == T.baseline_cost(OPUS, AS_READ)
    assert T.baseline_cost(OPUS, AS_READ) < T.baseline_cost(OPUS, UNCACHED)


def test_another_system_prompt_an_expired_one_or_a_shorter_prompt_stays_uncached() -> None:
    clock = Clock()
    cache = BaselineCache(clock=clock)
    cache.cost(T, OPUS, params(marked=True), WRITE)
    assert cache.cost(T, OPUS, params("Another prompt. " * 400, marked=False), UNCACHED) == T.baseline_cost(
        OPUS, UNCACHED
    )
    short = Usage(input_tokens=2000, output_tokens=10)  # fewer input tokens than the cached prompt
    assert cache.cost(T, OPUS, params(marked=False), short) == T.baseline_cost(OPUS, short)
    clock.now += 301  # past the 5-minute lifetime
    assert cache.cost(T, OPUS, params(marked=False), UNCACHED) == T.baseline_cost(OPUS, UNCACHED)


def test_an_uncached_use_keeps_the_baseline_s_entry_alive_as_a_read_would() -> None:
    clock = Clock()
    cache = BaselineCache(clock=clock)
    cache.cost(T, OPUS, params(marked=True), WRITE)
    for _ in range(3):
        clock.now += 200  # each use inside the lifetime of the one before
        assert cache.cost(T, OPUS, params(marked=False), UNCACHED) == T.baseline_cost(OPUS, AS_READ)
    clock.now += 200  # 800 s after the write: only those reads kept it, so a tier's write is a read there
    assert cache.cost(T, OPUS, params(marked=True), WRITE) == T.baseline_cost(OPUS, AS_READ)


def test_tokens_cached_past_the_system_prompt_are_not_taken_for_its_size() -> None:
    # With a breakpoint on a document too, what was cached is the system prompt and the document.
    cache = BaselineCache(clock=Clock())
    cache.cost(T, OPUS, params(marked=True, document=True), Usage(input_tokens=20, cache_write_5m=5000))
    assert cache.cost(T, OPUS, params(marked=False), UNCACHED) == T.baseline_cost(OPUS, UNCACHED)


def test_a_send_that_left_before_the_write_finished_is_not_credited() -> None:
    clock = Clock()
    cache = BaselineCache(clock=clock)
    sent = cache.now()  # both requests leave together: a single cache would have missed twice
    clock.now += 5
    cache.cost(T, OPUS, params(marked=True), WRITE, sent_at=sent)
    assert cache.cost(T, OPUS, params(marked=False), UNCACHED, sent_at=sent) == T.baseline_cost(OPUS, UNCACHED)


def test_another_baseline_model_does_not_inherit_the_cache() -> None:
    cache = BaselineCache(clock=Clock())
    cache.cost(T, OPUS, params(marked=True), WRITE)
    other = "claude-sonnet-5-5"
    assert cache.cost(T, other, params(marked=False), UNCACHED) == T.baseline_cost(other, UNCACHED)
