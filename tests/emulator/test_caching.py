"""Prompt caching: breakpoints, TTLs on the injected clock, byte-exact prefixes."""

# mypy: disable-error-code="misc,list-item"
# Raw request dicts are the point of these tests: bodies are built and merged as plain dicts, not SDK TypedDicts.
from __future__ import annotations

from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload_emulator import EmulatorConfig, EmulatorState
from offload_emulator.server import EmulatorHandle
from offload_emulator.tokenizer import MESSAGE_OVERHEAD, REQUEST_OVERHEAD, count_text

SONNET = "claude-sonnet-5-5"  # minimum cacheable prefix: 1024 tokens
LONG = " ".join(f"fact{i}" for i in range(800))  # about 2,400 tokens
LONG2 = " ".join(f"note{i}" for i in range(800))


def cc(ttl: str = "5m") -> dict[str, str]:
    return {"type": "ephemeral", "ttl": ttl}


def request(system_text: str = LONG, sys_ttl: str = "1h", question: str = "Q?", **extra: Any) -> dict[str, Any]:
    return {
        "model": SONNET,
        "max_tokens": 20,
        "system": [{"type": "text", "text": system_text, "cache_control": cc(sys_ttl)}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": LONG2, "cache_control": cc("5m")}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": question},
        ],
        **extra,
    }


def usage(client: anthropic.Anthropic, body: dict[str, Any]) -> tuple[int, int, int, int, int]:
    u = client.messages.create(**body).usage
    assert u.cache_creation is not None
    total = client.messages.count_tokens(**{k: v for k, v in body.items() if k != "max_tokens"}).input_tokens
    assert u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0) == total
    return (
        u.input_tokens,
        u.cache_creation.ephemeral_5m_input_tokens,
        u.cache_creation.ephemeral_1h_input_tokens,
        u.cache_read_input_tokens or 0,
        total,
    )


P1 = REQUEST_OVERHEAD + MESSAGE_OVERHEAD + count_text(LONG)  # through the system block
P2 = P1 + MESSAGE_OVERHEAD + count_text(LONG2)  # through the first user block


def test_miss_write_read_with_5m_and_1h_breakdown(client: anthropic.Anthropic) -> None:
    inp, w5, w1, read, total = usage(client, request())
    assert (w1, w5, read) == (P1, P2 - P1, 0)
    assert inp == total - P2
    inp, w5, w1, read, _ = usage(client, request(question="Another question?"))
    assert (w1, w5, read) == (0, 0, P2)


def test_ttl_expiry_on_the_injected_clock(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    usage(client, request())
    emulator.state.clock.advance(301)  # the 5m entry is gone, the 1h one is not
    _, w5, w1, read, _ = usage(client, request())
    assert (read, w5, w1) == (P1, P2 - P1, 0)
    emulator.state.clock.advance(3601)
    _, w5, w1, read, _ = usage(client, request())
    assert (read, w5, w1) == (0, P2 - P1, P1)


def test_a_read_refreshes_the_ttl(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    body = request(sys_ttl="5m")
    usage(client, body)
    emulator.state.clock.advance(200)
    assert usage(client, body)[3] == P2
    emulator.state.clock.advance(200)  # 400 s after the write, 200 s after the read
    assert usage(client, body)[3] == P2


def test_one_changed_byte_is_a_miss(client: anthropic.Anthropic) -> None:
    usage(client, request())
    changed = LONG[:-1] + "X"
    _, w5, w1, read, _ = usage(client, request(system_text=changed))
    assert read == 0 and w1 == P1 and w5 == P2 - P1
    # The key excludes cache_control markers themselves: a different TTL still hits.
    assert usage(client, request(system_text=changed, sys_ttl="1h"))[3] == P2


def test_below_minimum_prefix_is_not_cached(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    body = {
        "model": SONNET,
        "max_tokens": 20,
        "system": [{"type": "text", "text": "short system prompt", "cache_control": cc()}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    for _ in range(2):
        inp, w5, w1, read, total = usage(client, body)
        assert (w5, w1, read, inp) == (0, 0, 0, total)
    assert len(emulator.state.cache) == 0


def test_haiku_has_a_higher_minimum(client: anthropic.Anthropic) -> None:
    text = " ".join(f"word{i}" for i in range(700))  # ~1,400 tokens: enough for sonnet, not haiku
    for model, cached in (("claude-haiku-5-5", False), (SONNET, True)):
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 5,
            "system": [{"type": "text", "text": text, "cache_control": cc()}],
            "messages": [{"role": "user", "content": "hi"}],
        }
        assert (client.messages.create(**body).usage.cache_creation_input_tokens > 0) is cached


def test_more_than_four_breakpoints_is_400(client: anthropic.Anthropic) -> None:
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": cc()} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4 blocks with cache_control"):
        client.messages.create(model=SONNET, max_tokens=5, messages=[{"role": "user", "content": blocks}])


def test_1h_after_5m_is_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="ttl='1h'"):
        client.messages.create(**request(sys_ttl="5m") | {"messages": [_user_block("x", "1h")]})


def _user_block(text: str, ttl: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text, "cache_control": cc(ttl)}]}


def test_tools_are_part_of_the_prefix(client: anthropic.Anthropic) -> None:
    tool = {"name": "search", "description": LONG, "input_schema": {"type": "object"}}
    body: dict[str, Any] = {
        "model": SONNET,
        "max_tokens": 5,
        "tools": [tool | {"cache_control": cc()}],
        "messages": [_user_block("hi", "5m")],
    }
    first = client.messages.create(**body).usage
    assert first.cache_creation_input_tokens and not first.cache_read_input_tokens
    again = client.messages.create(**body).usage
    assert again.cache_read_input_tokens == first.cache_creation_input_tokens


_texts = st.sampled_from(["alpha", LONG, LONG2, "beta gamma", LONG + "!"])
_ttls = st.sampled_from([None, "1h", "5m"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_texts, _ttls, _texts, _ttls), min_size=1, max_size=6), st.integers(0, 400))
def test_usage_always_adds_up_to_count_tokens(calls: list[tuple[str, str | None, str, str | None]], step: int) -> None:
    state = EmulatorState(EmulatorConfig())
    for sys_text, sys_ttl, user_text, user_ttl in calls:
        if sys_ttl == "5m" and user_ttl == "1h":
            user_ttl = "5m"
        system: dict[str, Any] = {"type": "text", "text": sys_text}
        block: dict[str, Any] = {"type": "text", "text": user_text}
        if sys_ttl:
            system["cache_control"] = cc(sys_ttl)
        if user_ttl:
            block["cache_control"] = cc(user_ttl)
        body = {
            "model": SONNET,
            "max_tokens": 5,
            "system": [system],
            "messages": [{"role": "user", "content": [block]}],
        }
        u = state.run_message(body)["usage"]
        from offload_emulator.prompt import parse_count

        total = parse_count({k: v for k, v in body.items() if k != "max_tokens"}).total_tokens
        parts = u["cache_creation"]
        assert (
            u["cache_creation_input_tokens"] == parts["ephemeral_5m_input_tokens"] + parts["ephemeral_1h_input_tokens"]
        )
        assert u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"] == total
        state.clock.advance(step)
