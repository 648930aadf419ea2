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
        self.now += 0.001  # a monotonic clock: each request leaves a little after the one before
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


def test_another_system_prompt_an_expired_one_or_a_shorter_prompt_is_not_read() -> None:
    clock = Clock()
    cache = BaselineCache(clock=clock)
    cache.cost(T, OPUS, params(marked=True), WRITE)
    assert cache.cost(T, OPUS, params("Another prompt. " * 400, marked=False), UNCACHED) == T.baseline_cost(
        OPUS, UNCACHED
    )
    short = Usage(input_tokens=2000, output_tokens=10)  # fewer input tokens than the cached prompt
    assert cache.cost(T, OPUS, params(marked=False), short) == T.baseline_cost(OPUS, short)
    clock.now += 301  # past the 5-minute lifetime: no read; the baseline's placement (offload's own
    # rule on that history: two sends, the last 301 s ago) would write it again, for an hour
    again = Usage(input_tokens=20, cache_write_1h=3000, output_tokens=10)
    assert cache.cost(T, OPUS, params(marked=False), UNCACHED) == T.baseline_cost(OPUS, again)


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


def test_a_send_that_left_before_the_writer_s_answer_began_is_not_credited() -> None:
    # Both leave at once: on the baseline model neither would have found the other's prompt (nor
    # its placement the other's send), so the reader sends it uncached, as it did.
    clock = Clock()
    cache = BaselineCache(clock=lambda: clock.now)
    writer = cache.sending(OPUS, params(marked=True), object())
    reader = cache.sending(OPUS, params(marked=False), object())  # both leave together
    clock.now += 5
    writer.begun.now()
    cache.cost(T, OPUS, params(marked=True), WRITE, sent=writer)
    assert cache.cost(T, OPUS, params(marked=False), UNCACHED, sent=reader) == T.baseline_cost(OPUS, UNCACHED)


def test_another_baseline_model_does_not_inherit_the_cache() -> None:
    cache = BaselineCache(clock=Clock())
    cache.cost(T, OPUS, params(marked=True), WRITE)
    other = "claude-sonnet-5-5"
    assert cache.cost(T, other, params(marked=False), UNCACHED) == T.baseline_cost(other, UNCACHED)


def test_a_call_sent_while_the_writer_was_still_answering_reads_the_baseline_s_prefix() -> None:
    # The API serves a prefix to requests arriving once the response writing it has begun
    # (prompt-caching docs: "A cache entry only becomes available after the first response
    # begins"), not once it has finished: B, sent while A's answer streams, and answered first,
    # would have read A's prefix on the baseline model. It was priced as a second write.
    cache = BaselineCache(clock=Clock())
    a = cache.sending(OPUS, params(marked=True), object())
    a.begun.now()  # A's answer begins to stream
    b = cache.sending(OPUS, params(marked=True), object())
    b.begun.now()
    assert cache.cost(T, OPUS, params(marked=True), WRITE, sent=b) == T.baseline_cost(OPUS, AS_READ)
    assert cache.cost(T, OPUS, params(marked=True), WRITE, sent=a) == T.baseline_cost(OPUS, WRITE)


def test_a_call_sent_before_the_writer_s_answer_began_writes_too() -> None:
    # A plain (unstreamed) call shows its start only with its whole answer: a call sent while it
    # was still waiting would have missed on the baseline model too (as in the emulator, which
    # begins a response after its latency).
    cache = BaselineCache(clock=Clock())
    a = cache.sending(OPUS, params(marked=True), object())
    b = cache.sending(OPUS, params(marked=True), object())
    a.begun.now()
    assert cache.cost(T, OPUS, params(marked=True), WRITE, sent=a) == T.baseline_cost(OPUS, WRITE)
    b.begun.now()
    assert cache.cost(T, OPUS, params(marked=True), WRITE, sent=b) == T.baseline_cost(OPUS, WRITE)


def test_a_request_that_was_never_answered_gives_the_baseline_nothing() -> None:
    cache = BaselineCache(clock=Clock())
    cache.sending(OPUS, params(marked=True), object())  # refused by the API: no answer began
    b = cache.sending(OPUS, params(marked=True), object())
    b.begun.now()
    assert cache.cost(T, OPUS, params(marked=True), WRITE, sent=b) == T.baseline_cost(OPUS, WRITE)
    c = cache.sending(OPUS, params(marked=True), object())  # B's write is what the baseline holds
    assert cache.cost(T, OPUS, params(marked=True), WRITE, sent=c) == T.baseline_cost(OPUS, AS_READ)


def test_an_escalation_is_the_same_baseline_request_as_its_first_try() -> None:
    # The host sent one request; its first try (not the answer it used) and the rung above it are
    # that one request to the baseline model, which would have written the prefix once, not read it.
    cache = BaselineCache(clock=Clock())
    host_request = object()
    cache.sending(OPUS, params(marked=True), host_request).begun.now()  # the first try
    second = cache.sending(OPUS, params(marked=True), host_request)
    assert cache.cost(T, OPUS, params(marked=True), WRITE, sent=second) == T.baseline_cost(OPUS, WRITE)
    later = cache.sending(OPUS, params(marked=True), object())  # the host's next request reads it
    assert cache.cost(T, OPUS, params(marked=True), WRITE, sent=later) == T.baseline_cost(OPUS, AS_READ)


def test_a_short_stream_across_tiers_is_priced_as_the_baseline_model_would_have_cached_it() -> None:
    # Each tier sends a family's system prompt uncached until its own second call; the baseline
    # model, which would have had every call, writes it at the second and reads it from the third.
    # Three tiers in turn: the first three calls go uncached, the next three each write.
    cache = BaselineCache(clock=Clock())
    sends = [UNCACHED, UNCACHED, UNCACHED, WRITE, WRITE, WRITE]
    total = 0
    for usage in sends:
        sent = cache.sending(OPUS, params(marked=usage is WRITE), object())
        sent.begun.now()
        total += cache.cost(T, OPUS, params(marked=usage is WRITE), usage, sent=sent)
    baseline_model = [UNCACHED, WRITE, AS_READ, AS_READ, AS_READ, AS_READ]
    assert total == sum(T.baseline_cost(OPUS, u) for u in baseline_model)


def test_uncached_sends_before_the_baseline_s_write_began_each_write() -> None:
    # A family's calls fanned out at once: the baseline model would have missed on every one after
    # the first (sent before any answer began) and written it each time.
    cache = BaselineCache(clock=Clock())
    sends = [cache.sending(OPUS, params(marked=False), object()) for _ in range(4)]
    total = 0
    for i, sent in enumerate(sends):
        sent.begun.now()
        total += cache.cost(T, OPUS, params(marked=i == 3), WRITE if i == 3 else UNCACHED, sent=sent)
    assert total == sum(T.baseline_cost(OPUS, u) for u in [UNCACHED, WRITE, WRITE, WRITE])
