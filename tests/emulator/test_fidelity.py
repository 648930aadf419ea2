"""Emulator faithfulness: behaviours of the real API that offload's cost claims depend on.

- Prompt caching checks for hits at earlier content-block boundaries, 20 positions per
  breakpoint counting the breakpoint itself (the "lookback"), so a conversation whose breakpoint moves forward
  reads the prefix an earlier turn wrote. Writes happen only at breakpoints.
- A batch request is processed when the batch runs, not when a client first looks at the batch:
  its usage must not depend on how late the caller polls.
- Error types per status follow the API's error list (504 is `timeout_error`).
"""

# mypy: disable-error-code="typeddict-item"
# Raw request dicts are the point of these tests: bodies are built and merged as plain dicts, not SDK TypedDicts.
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from emulator_fixtures import running
from offload_emulator.server import EmulatorHandle
from offload_emulator.tokenizer import MESSAGE_OVERHEAD, REQUEST_OVERHEAD, count_text

SONNET = "claude-sonnet-5-5"  # minimum cacheable prefix: 1024 tokens
LONG = " ".join(f"fact{i}" for i in range(800))  # about 2,400 tokens
CC = {"type": "ephemeral", "ttl": "5m"}
TURN1 = REQUEST_OVERHEAD + MESSAGE_OVERHEAD + count_text(LONG)  # prefix through the first user block


def first_turn(**extra: Any) -> dict[str, Any]:
    return {
        "model": SONNET,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": LONG, "cache_control": CC}]}],
        **extra,
    }


def usage(client: anthropic.Anthropic, body: dict[str, Any]) -> anthropic.types.Usage:
    u: anthropic.types.Usage = client.messages.create(**body).usage
    total = client.messages.count_tokens(**{k: v for k, v in body.items() if k != "max_tokens"}).input_tokens
    assert u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0) == total
    return u


def test_a_moved_breakpoint_reads_the_prefix_an_earlier_turn_wrote(client: anthropic.Anthropic) -> None:
    first = usage(client, first_turn())
    assert first.cache_creation_input_tokens == TURN1
    # Turn 2: same history plus a reply and a new question; the breakpoint moved to the new
    # last block. The API finds the turn-1 entry two blocks back and reads it.
    second = first_turn()
    second["messages"] = [
        {"role": "user", "content": [{"type": "text", "text": LONG}]},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": [{"type": "text", "text": "And next?", "cache_control": CC}]},
    ]
    u = usage(client, second)
    assert u.cache_read_input_tokens == TURN1
    rest = MESSAGE_OVERHEAD + count_text("noted") + MESSAGE_OVERHEAD + count_text("And next?")
    assert u.cache_creation_input_tokens == rest and u.input_tokens == 0


def test_automatic_caching_follows_a_growing_conversation(client: anthropic.Anthropic) -> None:
    auto = {"cache_control": {"type": "ephemeral"}}
    body: dict[str, Any] = {"model": SONNET, "max_tokens": 5, "messages": [{"role": "user", "content": LONG}], **auto}
    assert usage(client, body).cache_creation_input_tokens == TURN1
    body["messages"] = body["messages"] + [
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "And next?"},
    ]
    assert usage(client, body).cache_read_input_tokens == TURN1


@pytest.mark.parametrize(("filler", "hit"), [(19, True), (20, False)])
def test_lookback_checks_20_positions_counting_the_breakpoint(
    client: anthropic.Anthropic, filler: int, hit: bool
) -> None:
    # "The lookback window is 20 blocks. The system checks at most 20 positions per breakpoint,
    # counting the breakpoint itself as the first." (Prompt caching,
    # https://platform.claude.com/docs/en/build-with-claude/prompt-caching). The written entry
    # sits at block 0; the breakpoint at block `filler`: 19 is the 20th position, 20 the 21st.
    usage(client, first_turn())
    blocks: list[dict[str, Any]] = [{"type": "text", "text": LONG}]
    blocks += [{"type": "text", "text": f"item {i}"} for i in range(filler)]
    blocks[-1]["cache_control"] = CC
    u = usage(client, first_turn() | {"messages": [{"role": "user", "content": blocks}]})
    assert u.cache_read_input_tokens == (TURN1 if hit else 0)


@pytest.mark.parametrize(("kind", "hit"), [("tool", True), ("text", False)])
def test_a_run_of_tool_blocks_is_one_lookback_position(client: anthropic.Anthropic, kind: str, hit: bool) -> None:
    # "On the Claude API, a run of consecutive tool_use blocks counts as one position, and so does
    # a run of consecutive tool_result blocks" (Prompt caching, lookback). 25 calls and their 25
    # results are two positions; 50 text blocks are 50, far past the 20-position window.
    usage(client, first_turn())
    if kind == "tool":
        calls = [{"type": "tool_use", "id": f"toolu_{i}", "name": "read", "input": {"n": i}} for i in range(25)]
        results = [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "ok"} for i in range(25)]
    else:
        calls = [{"type": "text", "text": f"call {i}"} for i in range(25)]
        results = [{"type": "text", "text": f"result {i}"} for i in range(25)]
    body = first_turn()
    body["messages"] = [
        {"role": "user", "content": [{"type": "text", "text": LONG}]},
        {"role": "assistant", "content": calls},
        {"role": "user", "content": [*results, {"type": "text", "text": "So?", "cache_control": CC}]},
    ]
    assert usage(client, body).cache_read_input_tokens == (TURN1 if hit else 0)


def test_lookback_never_reads_a_prefix_nobody_wrote(client: anthropic.Anthropic) -> None:
    # Writes happen only at breakpoints: a shorter prefix of an earlier request is not cached.
    body = first_turn()
    body["messages"] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": LONG}, {"type": "text", "text": "x", "cache_control": CC}],
        }
    ]
    usage(client, body)
    assert usage(client, first_turn()).cache_read_input_tokens == 0


@pytest.fixture
def best_case() -> Iterator[tuple[EmulatorHandle, anthropic.Anthropic]]:
    """Every batch lookup honoured: these tests are about *when* a batch request runs, not luck."""
    with running(batch_cache_hit_rate=1.0) as emu, anthropic.Anthropic(base_url=emu.url, api_key="k") as c:
        yield emu, c


def test_batch_usage_does_not_depend_on_when_it_is_polled(
    best_case: tuple[EmulatorHandle, anthropic.Anthropic],
) -> None:
    emulator, client = best_case
    clock = emulator.state.clock
    clock.freeze()
    system = [{"type": "text", "text": LONG, "cache_control": CC}]
    ask: dict[str, Any] = {"model": SONNET, "max_tokens": 5, "system": system}
    client.messages.create(**ask, messages=[{"role": "user", "content": "warm"}])
    batch = client.messages.batches.create(
        requests=[{"custom_id": "a", "params": ask | {"messages": [{"role": "user", "content": "q"}]}}]
    )
    # The batch finishes 0.2 s after creation, well inside the 5-minute TTL; the caller
    # only looks after 10 minutes. The request ran (and read the cache) at 0.2 s.
    clock.advance(600)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at is not None
    ran_for = (ended.ended_at - ended.created_at).total_seconds()
    assert ran_for == pytest.approx(0.2, abs=1e-5)  # RFC 3339 keeps microseconds
    (line,) = list(client.messages.batches.results(batch.id))
    assert line.result.type == "succeeded"
    u = line.result.message.usage
    assert u.cache_read_input_tokens == REQUEST_OVERHEAD + MESSAGE_OVERHEAD + count_text(LONG)
    assert u.cache_creation_input_tokens == 0


def test_a_batch_write_is_visible_to_a_later_call_before_anyone_polls(
    best_case: tuple[EmulatorHandle, anthropic.Anthropic],
) -> None:
    emulator, client = best_case
    clock = emulator.state.clock
    clock.freeze()
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    ask: dict[str, Any] = {"model": SONNET, "max_tokens": 5, "system": system}
    client.messages.batches.create(
        requests=[{"custom_id": "a", "params": ask | {"messages": [{"role": "user", "content": "q"}]}}]
    )
    clock.advance(60)  # the batch ended (and wrote the 1h entry) 59.8 s ago; nobody polled
    u = client.messages.create(**ask, messages=[{"role": "user", "content": "later"}]).usage
    assert u.cache_read_input_tokens and not u.cache_creation_input_tokens


def test_504_is_a_timeout_error() -> None:
    with running() as emu, anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0) as c:
        emu.state.faults.force(504)
        with pytest.raises(anthropic.APIStatusError) as info:
            c.messages.create(model=SONNET, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 504
    assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == "timeout_error"


def test_a_request_evaluated_in_the_past_sees_the_cache_of_that_moment() -> None:
    from offload_emulator import EmulatorConfig, EmulatorState
    from offload_emulator.clock import Clock

    state = EmulatorState(EmulatorConfig(clock=Clock(1000.0, frozen=True)))
    body = first_turn()
    state.clock.advance(10)
    assert state.run_message(body)["usage"]["cache_creation_input_tokens"] == TURN1  # written at 1010
    # Run at 1005 (before that write): the entry does not exist yet for it.
    early = state.run_message(body, service_tier="batch", at=1005.0)["usage"]
    assert early["cache_read_input_tokens"] == 0 and early["cache_creation_input_tokens"] == TURN1
    state.clock.advance(400)  # now 1410; the 5m entry lived until 1310
    assert state.run_message(body, service_tier="batch", at=1320.0)["usage"]["cache_read_input_tokens"] == 0
    # That run (at 1320) wrote it again, alive until 1620: a call now reads it.
    assert state.run_message(body)["usage"]["cache_read_input_tokens"] == TURN1
