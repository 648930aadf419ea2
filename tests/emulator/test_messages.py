"""Messages, count_tokens, models and API errors through the real anthropic SDK."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from emulator_fixtures import running
from offload_emulator.server import EmulatorHandle

HAIKU = "claude-haiku-5-5"


def user(text: str) -> list[anthropic.types.MessageParam]:
    return [{"role": "user", "content": text}]


def test_create_message_reports_usage(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    msg = client.messages.create(model=HAIKU, max_tokens=200, messages=user("Summarize the plan."))
    assert msg.type == "message" and msg.role == "assistant" and msg.model == HAIKU
    assert msg.stop_reason == "end_turn"
    text = msg.content[0]
    assert text.type == "text" and text.text.startswith(f"Emulated answer ({HAIKU}): ")
    u = msg.usage
    assert u.input_tokens > 0 and u.output_tokens > 0
    assert u.cache_creation_input_tokens == 0 and u.cache_read_input_tokens == 0
    assert u.cache_creation is not None and u.cache_creation.ephemeral_5m_input_tokens == 0
    assert u.service_tier == "standard"
    (call,) = emulator.state.calls("/v1/messages")
    assert call.model == HAIKU and call.usage == u.model_dump(exclude_none=True)
    assert call.body["messages"][0]["content"] == "Summarize the plan."


def test_count_tokens_agrees_with_usage(client: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {
        "model": HAIKU,
        "system": [{"type": "text", "text": "You are terse."}],
        "tools": [{"name": "lookup", "description": "find", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": [{"type": "text", "text": "And 3+3, ünïcode?"}]},
        ],
    }
    counted = client.messages.count_tokens(**kwargs).input_tokens
    msg = client.messages.create(max_tokens=50, **kwargs)
    u = msg.usage
    assert counted == u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)


def test_reply_is_truncated_at_max_tokens(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model=HAIKU, max_tokens=3, messages=user("one two three four five six"))
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 3


def test_request_id_header_on_every_response(emulator: EmulatorHandle) -> None:
    with httpx2.Client(base_url=emulator.url) as http:
        ok = http.get("/v1/models", headers={"x-api-key": "k"})
        missing = http.get("/v1/nowhere", headers={"x-api-key": "k"})
        not_json = http.post("/v1/messages", content=b"{nope", headers={"authorization": "Bearer k"})
    for resp in (ok, missing, not_json):
        assert resp.headers["request-id"].startswith("req_")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    body = not_json.json()
    assert not_json.status_code == 400 and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error" and "not valid JSON" in body["error"]["message"]
    assert body["request_id"] == not_json.headers["request-id"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"temperature": 0.5}, "temperature"),
        ({"top_k": 5}, "top_k"),
        ({"frobnicate": 1}, "frobnicate: Extra inputs are not permitted"),
        ({"messages": []}, "at least one message"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "first message"),
        # A final assistant turn (prefill) is a 400 on 4.6+ models, this Haiku 5.5 included
        # (https://platform.claude.com/docs/en/api/errors, "Prefill").
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "does not support assistant message prefill",
        ),
    ],
)
def test_malformed_requests_are_400(client: anthropic.Anthropic, extra: dict[str, Any], expected: str) -> None:
    body = {"model": HAIKU, "max_tokens": 10, "messages": user("hi"), **extra}
    with pytest.raises(anthropic.BadRequestError, match=expected) as info:
        client.post("/v1/messages", body=body, cast_to=anthropic.types.Message)
    assert info.value.status_code == 400
    assert info.value.request_id is not None and info.value.request_id.startswith("req_")


def test_missing_max_tokens_is_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens: Field required"):
        client.post("/v1/messages", body={"model": HAIKU, "messages": user("x")}, cast_to=anthropic.types.Message)


def test_no_key_is_401(emulator: EmulatorHandle) -> None:
    headers: dict[str, Any] = {"Authorization": anthropic.Omit()}
    c = anthropic.Anthropic(base_url=emulator.url, api_key="unused", default_headers=headers)
    with c, pytest.raises(anthropic.AuthenticationError, match="missing authentication"):
        c.messages.create(model=HAIKU, max_tokens=5, messages=user("hi"))


def test_wrong_key_is_401_when_a_key_is_configured() -> None:
    with running(api_key="right") as emu:
        wrong = anthropic.Anthropic(base_url=emu.url, api_key="wrong", max_retries=0)
        with wrong, pytest.raises(anthropic.AuthenticationError):
            wrong.models.list()
        with anthropic.Anthropic(base_url=emu.url, api_key="right") as c:
            assert c.models.retrieve(HAIKU).id == HAIKU


def test_unknown_model_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError, match="claude-nope-9"):
        client.messages.create(model="claude-nope-9", max_tokens=5, messages=user("hi"))
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nope-9")


def test_body_over_the_limit_is_413() -> None:
    with running(max_message_body=2000) as emu, anthropic.Anthropic(base_url=emu.url, api_key="k") as c:
        with pytest.raises(anthropic.APIStatusError) as info:
            c.messages.create(model=HAIKU, max_tokens=5, messages=user("x" * 5000))
        assert info.value.status_code == 413
        assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == "request_too_large"


def test_models_list_and_retrieve(client: anthropic.Anthropic) -> None:
    ids = [m.id for m in client.models.list(limit=4)]  # auto-paginates with after_id
    assert len(ids) == 11 and len(set(ids)) == 11
    assert {"claude-haiku-5-5", "claude-opus-4-8", "claude-sonnet-5"} <= set(ids)
    page = client.models.list(limit=2)
    assert page.has_more and page.first_id == ids[0] and page.last_id == ids[1]
    info = client.models.retrieve("claude-sonnet-4-6")
    assert info.type == "model" and info.display_name == "Claude Sonnet 4.6"
    assert info.max_input_tokens and info.max_tokens
