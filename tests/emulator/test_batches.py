"""Message Batches lifecycle through the SDK (sync and async)."""

from __future__ import annotations

import time
from typing import Any, cast

import anthropic
import pytest
from anthropic.types.messages.batch_create_params import Request

from emulator_fixtures import running
from offload_emulator.config import EmulatorConfig
from offload_emulator.server import EmulatorHandle

HAIKU = "claude-haiku-5-5"


def req(custom_id: str, text: str, **params: Any) -> Request:
    body = {"model": HAIKU, "max_tokens": 50, "messages": [{"role": "user", "content": text}]}
    return cast(Request, {"custom_id": custom_id, "params": body | params})


def wait_ended(c: anthropic.Anthropic, batch_id: str) -> anthropic.types.messages.MessageBatch:
    deadline = time.monotonic() + 5
    while True:
        batch = c.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended" or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def test_full_lifecycle(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    requests = [req(f"r{i}", f"question {i}") for i in range(5)]
    requests.append(req("bad", "x", temperature=0.2))  # invalid params -> errored, not a failed batch
    batch = client.messages.batches.create(requests=requests)
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == 6
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
    with pytest.raises(anthropic.BadRequestError, match="cannot be deleted"):
        client.messages.batches.delete(batch.id)

    ended = wait_ended(client, batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.results_url == f"{emulator.url}/v1/messages/batches/{batch.id}/results"
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.processing, counts.canceled) == (5, 1, 0, 0)

    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert set(results) == {"r0", "r1", "r2", "r3", "r4", "bad"}
    for i in range(5):
        res = results[f"r{i}"]
        assert res.type == "succeeded"
        assert res.message.usage.service_tier == "batch"
        assert f"question {i}" in res.message.content[0].text  # type: ignore[union-attr]
    bad = results["bad"]
    assert bad.type == "errored" and bad.error.error.type == "invalid_request_error"

    listed = [b.id for b in client.messages.batches.list(limit=1)]
    assert listed == [batch.id]
    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_results_order_is_seeded_not_request_order() -> None:
    def order(seed: int) -> list[str]:
        with (
            running(seed=seed, batch_delay_s=0.0) as emu,
            anthropic.Anthropic(base_url=emu.url, api_key="k") as c,
        ):
            batch = c.messages.batches.create(requests=[req(f"r{i}", "q") for i in range(12)])
            return [r.custom_id for r in c.messages.batches.results(batch.id)]

    first = order(3)
    assert first == order(3)
    assert first != [f"r{i}" for i in range(12)]


def test_cancel_ends_with_remaining_requests_canceled(emulator: EmulatorHandle, client: anthropic.Anthropic) -> None:
    emulator.state.clock.freeze()
    batch = client.messages.batches.create(requests=[req(f"r{i}", "q") for i in range(4)])
    emulator.state.clock.advance(0.11)  # batch_delay_s is 0.2: 2 of 4 requests are done
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (2, 2)
    types = sorted(r.result.type for r in client.messages.batches.results(batch.id))
    assert types == ["canceled", "canceled", "succeeded", "succeeded"]


def test_requests_not_done_within_24h_expire() -> None:
    with running(batch_delay_s=2 * 86400) as emu, anthropic.Anthropic(base_url=emu.url, api_key="k") as c:
        batch = c.messages.batches.create(requests=[req(f"r{i}", "q") for i in range(4)])
        emu.state.clock.advance(86400)
        ended = c.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert (ended.request_counts.succeeded, ended.request_counts.expired) == (2, 2)


def test_list_paginates_both_ways(emulator: EmulatorHandle, client: anthropic.Anthropic) -> None:
    emulator.state.clock.freeze()
    ids = []
    for i in range(5):
        ids.append(client.messages.batches.create(requests=[req("a", f"q{i}")]).id)
        emulator.state.clock.advance(1)
    newest_first = ids[::-1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first
    page = client.messages.batches.list(limit=2, after_id=newest_first[1])
    assert [b.id for b in page.data] == newest_first[2:4] and page.has_more
    back = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in back.data] == newest_first[1:3] and back.has_more
    assert back.first_id == newest_first[1] and back.last_id == newest_first[2]


LONG = " ".join(f"fact{i}" for i in range(900))
SHARED = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]


def batch_hits(rate: float, n: int = 200, seed: int = 1) -> dict[str, tuple[int, int]]:
    """custom_id -> (cache read, cache write) for n batch requests after a synchronous warm-up."""
    with running(batch_cache_hit_rate=rate, seed=seed) as emu, anthropic.Anthropic(base_url=emu.url, api_key="k") as c:
        ask: dict[str, Any] = {"model": "claude-sonnet-5-5", "max_tokens": 5, "system": SHARED}
        c.messages.create(**ask, messages=[{"role": "user", "content": "warm"}])
        requests = [req(f"r{i}", f"q{i}", **ask) for i in range(n)]
        batch = c.messages.batches.create(requests=requests)
        emu.state.clock.advance(1)
        out = {}
        for line in c.messages.batches.results(batch.id):
            assert line.result.type == "succeeded"
            u = line.result.message.usage
            assert u.service_tier == "batch"
            out[line.custom_id] = (u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0)
        return out


def test_batch_cache_hits_are_best_effort_at_the_configured_rate() -> None:
    # Batch processing docs (https://platform.claude.com/docs/en/build-with-claude/batch-processing):
    # "cache hits are provided on a best-effort basis. Users typically experience cache hit
    # rates ranging from 30% to 98%". The default rate is inside that range, and a request that
    # misses pays the cache write again instead of reading.
    assert 0.30 <= EmulatorConfig.batch_cache_hit_rate <= 0.98
    usage = batch_hits(EmulatorConfig.batch_cache_hit_rate)
    hits = [cid for cid, (read, _) in usage.items() if read]
    # 200 draws at p=0.64: mean 128, sd 6.8; +-4 sd.
    assert 100 <= len(hits) <= 156
    assert all(write == 0 for read, write in usage.values() if read)
    assert all(write > 0 for read, write in usage.values() if not read)
    # Seeded: the same seed gives the same hits, another seed other ones.
    assert batch_hits(EmulatorConfig.batch_cache_hit_rate) == usage
    assert batch_hits(EmulatorConfig.batch_cache_hit_rate, seed=2) != usage


@pytest.mark.parametrize(("rate", "hits"), [(1.0, 200), (0.0, 0)])
def test_batch_cache_hit_rate_bounds(rate: float, hits: int) -> None:
    assert sum(1 for read, _ in batch_hits(rate).values() if read) == hits


def test_malformed_batch_is_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="duplicate custom_id"):
        client.messages.batches.create(requests=[req("a", "x"), req("a", "y")])
    with pytest.raises(anthropic.BadRequestError, match="at least one request"):
        client.messages.batches.create(requests=[])


@pytest.mark.anyio
async def test_async_client_end_to_end(emulator: EmulatorHandle, aclient: anthropic.AsyncAnthropic) -> None:
    msg = await aclient.messages.create(model=HAIKU, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert msg.usage.output_tokens > 0
    emulator.state.faults.force(529)
    count = await aclient.messages.count_tokens(model=HAIKU, messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens == msg.usage.input_tokens
    batch = await aclient.messages.batches.create(requests=[req("only", "hello")])
    emulator.state.clock.advance(1)
    assert (await aclient.messages.batches.retrieve(batch.id)).processing_status == "ended"
    lines = [r async for r in await aclient.messages.batches.results(batch.id)]
    assert [r.custom_id for r in lines] == ["only"]
    assert lines[0].result.type == "succeeded" and lines[0].result.message.usage.service_tier == "batch"
    ids = [m.id async for m in aclient.models.list()]
    assert ids[0] == HAIKU and len(ids) == 11
