"""The emulator against the API documentation, one documented behaviour per test.

Each test names the page (and quotes the sentence) it follows, so a docs change shows which
assertion to revisit. Pages:
- Prompt caching: https://platform.claude.com/docs/en/build-with-claude/prompt-caching
- Messages API reference: https://platform.claude.com/docs/en/api/messages
- Errors: https://platform.claude.com/docs/en/api/errors
- Rate limits: https://platform.claude.com/docs/en/api/rate-limits
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import anthropic
import pytest
from anthropic.types import ToolParam
from anthropic.types.messages.batch_create_params import Request

from emulator_fixtures import running
from offload_emulator.models import MODELS
from offload_emulator.server import EmulatorHandle
from offload_emulator.tokenizer import MESSAGE_OVERHEAD, REQUEST_OVERHEAD, count_text

OPUS5 = "claude-opus-5"  # 512-token minimum
CC: dict[str, Any] = {"type": "ephemeral"}


def words(n: int, w: str = "x") -> str:
    """Text of exactly n emulator tokens."""
    text = w + f" {w}" * (n - 1)
    assert count_text(text) == n
    return text


def ask(text: str, *, cached: bool = True) -> list[dict[str, Any]]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if cached:
        block["cache_control"] = CC
    return [{"role": "user", "content": [block]}]


# -- minimum cacheable prefix ---------------------------------------------------------------
# "Cache limitations": "512 tokens for Claude Fable 5.1, Claude Mythos 5.1, Claude Opus 5.5,
# Claude Opus 5, Claude Sonnet 5.5, ...; 2,048 tokens for Claude Mythos Preview and Claude Opus
# 4.7; 4,096 tokens for Claude Opus 4.6 and Claude Opus 4.5; 1,024 tokens for Claude Opus 4.8,
# Claude Sonnet 5, Claude Sonnet 4.6, ...; 4,096 tokens for Claude Haiku 4.5". Haiku 5.5 is
# not on the page; the emulator keeps 2,048 for it.
DOCUMENTED_MINIMUM = {
    "claude-sonnet-5-5": 512,
    "claude-opus-5-5": 512,
    "claude-fable-5-1": 512,
    "claude-opus-5": 512,
    "claude-sonnet-5": 1024,
    "claude-opus-4-8": 1024,
    "claude-opus-4-7": 2048,
    "claude-opus-4-6": 4096,
    "claude-sonnet-4-6": 1024,
    "claude-haiku-4-5": 4096,
    "claude-haiku-5-5": 2048,
}


def test_the_model_table_carries_the_documented_minimums() -> None:
    assert {m.id: m.min_cacheable for m in MODELS} == DOCUMENTED_MINIMUM


@pytest.mark.parametrize("model", ["claude-opus-4-8", "claude-opus-4-7", OPUS5])
def test_a_prefix_caches_from_the_documented_minimum_and_not_one_token_below(
    client: anthropic.Anthropic, model: str
) -> None:
    # "Shorter prompts cannot be cached, even if marked with cache_control" — and no error.
    minimum = DOCUMENTED_MINIMUM[model]
    overhead = REQUEST_OVERHEAD + MESSAGE_OVERHEAD
    below = client.messages.create(model=model, max_tokens=5, messages=ask(words(minimum - overhead - 1)))  # type: ignore[arg-type]
    assert below.usage.cache_creation_input_tokens == 0 and below.usage.input_tokens == minimum - 1
    at = client.messages.create(model=model, max_tokens=5, messages=ask(words(minimum - overhead, "y")))  # type: ignore[arg-type]
    assert at.usage.cache_creation_input_tokens == minimum and at.usage.input_tokens == 0


# -- what invalidates the cache ---------------------------------------------------------------
# "What invalidates the cache": the cache follows tools -> system -> messages; changing
# tool_choice or thinking parameters invalidates the message cache only (tools and system are
# kept); the speed setting invalidates system and messages; "Changing the output_config.effort
# value always invalidates message blocks ... Setting effort explicitly to the model's default
# is equivalent to omitting it and does not invalidate."
TOOL = {"name": "lookup", "description": words(600, "t"), "input_schema": {"type": "object"}, "cache_control": CC}


def layered(**settings: Any) -> dict[str, Any]:
    return {
        "model": OPUS5,
        "max_tokens": 5,
        "tools": [TOOL],
        "system": [{"type": "text", "text": words(600, "s"), "cache_control": CC}],
        "messages": ask(words(600, "m")),
        **settings,
    }


def prefix_sizes(client: anthropic.Anthropic) -> tuple[int, int, int]:
    """Tokens through the tools, through the system prompt, and of the whole request."""
    body = layered()
    tools = client.messages.count_tokens(
        model=OPUS5, tools=[cast(ToolParam, TOOL)], messages=[{"role": "user", "content": "x"}]
    )
    total = client.messages.count_tokens(**{k: v for k, v in body.items() if k != "max_tokens"}).input_tokens
    through_tools = tools.input_tokens - MESSAGE_OVERHEAD - 1
    through_system = through_tools + MESSAGE_OVERHEAD + 600
    return through_tools, through_system, total


@pytest.mark.parametrize(
    ("before", "after", "kept"),
    [
        ({}, {"tool_choice": {"type": "any"}}, "system"),
        ({}, {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "system"),
        ({"output_config": {"effort": "low"}}, {"output_config": {"effort": "max"}}, "system"),
        ({}, {"speed": "fast"}, "tools"),
        ({}, {"output_config": {"effort": "high"}}, "all"),  # the default, spelled out
        ({"tool_choice": {"type": "auto"}}, {"tool_choice": {"type": "auto"}}, "all"),
    ],
)
def test_changing_a_setting_invalidates_the_levels_the_docs_name(
    client: anthropic.Anthropic, before: dict[str, Any], after: dict[str, Any], kept: str
) -> None:
    through_tools, through_system, total = prefix_sizes(client)
    first = client.messages.create(**layered(**before)).usage
    assert first.cache_creation_input_tokens == total
    again = client.messages.create(**layered(**after)).usage
    read = {"tools": through_tools, "system": through_system, "all": total}[kept]
    assert again.cache_read_input_tokens == read
    assert again.cache_creation_input_tokens == total - read


# -- max_tokens: 0 pre-warm --------------------------------------------------------------------
# "Pre-warming the cache": "Set max_tokens: 0 ... The response has an empty content array,
# stop_reason: "max_tokens", and a fully populated usage block ... Zero output tokens are
# billed." Rejected with stream: true (anthropics/skills prompt-caching.md).
def test_max_tokens_zero_prewarms_the_cache_and_bills_no_output(client: anthropic.Anthropic) -> None:
    body: dict[str, Any] = {"model": OPUS5, "system": [{"type": "text", "text": words(700), "cache_control": CC}]}
    warm = client.messages.create(**body, max_tokens=0, messages=[{"role": "user", "content": "q1"}])
    assert warm.content == [] and warm.stop_reason == "max_tokens"
    assert warm.usage.output_tokens == 0 and warm.usage.cache_creation_input_tokens
    real = client.messages.create(**body, max_tokens=50, messages=[{"role": "user", "content": "q2"}])
    assert real.usage.cache_read_input_tokens == warm.usage.cache_creation_input_tokens
    assert real.usage.output_tokens > 0 and real.content


@pytest.mark.parametrize(
    "extra",
    [{"stream": True}, {"tool_choice": {"type": "any"}, "tools": [TOOL]}, {"thinking": {"type": "enabled"}}],
)
def test_max_tokens_zero_is_rejected_where_it_needs_generation(
    client: anthropic.Anthropic, extra: dict[str, Any]
) -> None:
    body = {"model": OPUS5, "max_tokens": 0, "messages": ask("hi", cached=False), **extra}
    with pytest.raises(anthropic.BadRequestError, match="max_tokens: 0"):
        client.post("/v1/messages", body=body, cast_to=anthropic.types.Message)


def test_max_tokens_zero_is_rejected_inside_a_batch(emulator: EmulatorHandle, client: anthropic.Anthropic) -> None:
    params = {"model": OPUS5, "max_tokens": 0, "messages": ask("hi", cached=False)}
    batch = client.messages.batches.create(requests=[cast(Request, {"custom_id": "a", "params": params})])
    emulator.state.clock.advance(1)
    (line,) = list(client.messages.batches.results(batch.id))
    assert line.result.type == "errored"


# -- request validation ------------------------------------------------------------------------
def test_consecutive_same_role_turns_are_combined_not_rejected(client: anthropic.Anthropic) -> None:
    # Messages API reference: "Consecutive user or assistant turns in your request will be
    # combined into a single turn."
    split = [{"role": "user", "content": "first part"}, {"role": "user", "content": "second part"}]
    joined = [
        {"role": "user", "content": [{"type": "text", "text": "first part"}, {"type": "text", "text": "second part"}]}
    ]
    a = client.messages.create(model=OPUS5, max_tokens=5, messages=split)  # type: ignore[arg-type]
    b = client.messages.create(model=OPUS5, max_tokens=5, messages=joined)  # type: ignore[arg-type]
    assert a.usage.input_tokens == b.usage.input_tokens


def test_a_dated_snapshot_id_of_an_older_model_is_accepted(client: anthropic.Anthropic) -> None:
    # Models overview: Claude Haiku 4.5's API id is claude-haiku-4-5-20251001 (alias
    # claude-haiku-4-5); 4.6+ models have alias-only ids.
    msg = client.messages.create(model="claude-haiku-4-5-20251001", max_tokens=5, messages=ask("hi", cached=False))  # type: ignore[arg-type]
    assert msg.model == "claude-haiku-4-5-20251001"
    assert client.models.retrieve("claude-haiku-4-5-20251001").id == "claude-haiku-4-5"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-opus-5-20260301", max_tokens=5, messages=ask("hi", cached=False))  # type: ignore[arg-type]


@pytest.mark.parametrize(("model", "limit"), [("claude-sonnet-5", 128_000), ("claude-sonnet-4-6", 128_000)])
def test_max_tokens_reaches_the_documented_output_limit(client: anthropic.Anthropic, model: str, limit: int) -> None:
    # anthropics/skills models.md: Sonnet 5 and Sonnet 4.6 have 128K max output.
    body = {"model": model, "max_tokens": limit, "messages": ask("hi", cached=False)}
    assert client.post("/v1/messages", body=body, cast_to=anthropic.types.Message).stop_reason == "end_turn"
    with pytest.raises(anthropic.BadRequestError, match="maximum allowed number of output tokens"):
        client.post("/v1/messages", body=body | {"max_tokens": limit + 1}, cast_to=anthropic.types.Message)


def test_prefill_is_a_400_on_4_6_and_later_but_works_on_haiku_4_5(client: anthropic.Anthropic) -> None:
    # Errors page: "Claude 4.6 and later models ... do not support prefilling assistant
    # messages. Sending a request with a prefilled last assistant message to any of these
    # models returns a 400 invalid_request_error".
    prefilled = [{"role": "user", "content": "List three"}, {"role": "assistant", "content": "1."}]
    with pytest.raises(anthropic.BadRequestError, match="does not support assistant message prefill"):
        client.messages.create(model="claude-opus-4-6", max_tokens=5, messages=prefilled)  # type: ignore[arg-type]
    ok = client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=prefilled)  # type: ignore[arg-type]
    assert ok.stop_reason in ("end_turn", "max_tokens")


# -- errors and headers ------------------------------------------------------------------------
def test_409_is_a_conflict_error() -> None:
    # Errors page: "409 - conflict_error: The request conflicts with the current state of a resource."
    with running() as emu, anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0) as c:
        emu.state.faults.force(409)
        with pytest.raises(anthropic.ConflictError) as info:
            c.messages.create(model=OPUS5, max_tokens=5, messages=ask("hi", cached=False))  # type: ignore[arg-type]
    assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == "conflict_error"


def test_messages_responses_carry_rate_limit_headers(client: anthropic.Anthropic) -> None:
    # Rate limits, "Response headers": anthropic-ratelimit-{requests,tokens,input-tokens,
    # output-tokens}-{limit,remaining,reset}; reset in RFC 3339; tokens-* is the most
    # restrictive of the token limits.
    def call() -> Any:
        return client.messages.with_raw_response.create(model=OPUS5, max_tokens=50, messages=ask("hi", cached=False))  # type: ignore[arg-type]

    first, second = call(), call()
    h1, h2 = first.headers, second.headers
    for family in ("requests", "tokens", "input-tokens", "output-tokens"):
        for part in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{family}-{part}" in h2, (family, part)
        datetime.fromisoformat(h2[f"anthropic-ratelimit-{family}-reset"])
    limit = int(h2["anthropic-ratelimit-requests-limit"])
    assert int(h1["anthropic-ratelimit-requests-remaining"]) == limit - 1
    assert int(h2["anthropic-ratelimit-requests-remaining"]) == limit - 2
    assert int(h2["anthropic-ratelimit-output-tokens-remaining"]) <= int(h2["anthropic-ratelimit-output-tokens-limit"])


def test_a_429_carries_retry_after_in_whole_seconds() -> None:
    # Rate limits: a 429 comes "along with a retry-after header" ("The number of seconds to wait").
    with running(retry_after_ms=None) as emu, anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0) as c:
        emu.state.faults.force(429)
        with pytest.raises(anthropic.RateLimitError) as info:
            c.messages.create(model=OPUS5, max_tokens=5, messages=ask("hi", cached=False))  # type: ignore[arg-type]
    assert int(info.value.response.headers["retry-after"]) >= 1
