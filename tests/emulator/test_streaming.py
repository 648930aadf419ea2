"""SSE streaming and scripted tool_use replies, through the real SDK.

Streaming Messages (https://platform.claude.com/docs/en/build-with-claude/streaming):
message_start (a Message with empty content), content_block_start / content_block_delta /
content_block_stop per block, ping events, message_delta with *cumulative* usage, message_stop.
Tool use (https://platform.claude.com/docs/en/agents-and-tools/tool-use/overview): a reply
calling a tool ends with stop_reason "tool_use" and a {"type": "tool_use", "id", "name",
"input"} block.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2

from emulator_fixtures import running

SONNET = "claude-sonnet-5-5"
SYSTEM = [{"type": "text", "text": " ".join(f"fact{i}" for i in range(900)), "cache_control": {"type": "ephemeral"}}]
WEATHER = [
    {"match": "weather", "reply": "Let me check.", "tool_use": {"name": "get_weather", "input": {"city": "Paris"}}}
]


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": SONNET,
        "max_tokens": 400,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def test_the_sdk_stream_ends_with_the_non_streaming_message_and_usage() -> None:
    question = "Explain " + " ".join(f"topic{i}" for i in range(40))
    # Two emulators with one seed: same cache history, same ids; only the transport differs.
    with running() as a, anthropic.Anthropic(base_url=a.url, api_key="k") as c:
        plain = [c.messages.create(**body(question)) for _ in range(2)]  # a write, then a read
    with running() as b, anthropic.Anthropic(base_url=b.url, api_key="k") as c:
        streamed = []
        for _ in range(2):
            with c.messages.stream(**body(question)) as stream:
                text = "".join(stream.text_stream)
                streamed.append(stream.get_final_message())
            assert text == streamed[-1].content[0].text  # type: ignore[union-attr]
    for p, s in zip(plain, streamed, strict=True):
        assert s.model_dump() == p.model_dump()
    assert streamed[0].usage.cache_creation_input_tokens and streamed[1].usage.cache_read_input_tokens


def raw_events(url: str, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    resp = httpx2.post(f"{url}/v1/messages", json=payload | {"stream": True}, headers={"x-api-key": "k"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = []
    for chunk in resp.text.strip().split("\n\n"):
        name_line, data_line = chunk.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name  # "includes the matching event type in its data"
        events.append((name, data))
    return events


def test_the_raw_event_sequence_and_its_usage() -> None:
    with running() as emu:
        with anthropic.Anthropic(base_url=emu.url, api_key="k") as c:
            c.messages.create(**body("warm"))  # the next request reads the cache
            final = c.messages.create(**body("How are you?"))
        events = raw_events(emu.url, body("How are you?"))
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names
    assert names[1] == "content_block_start" and names[names.index("content_block_stop") - 1] == "content_block_delta"
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    u0 = start["usage"]
    assert u0["output_tokens"] == 1
    assert u0["cache_read_input_tokens"] == final.usage.cache_read_input_tokens > 0
    assert u0["input_tokens"] == final.usage.input_tokens
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == final.usage.output_tokens  # cumulative, not an increment
    assert delta["usage"]["cache_read_input_tokens"] == final.usage.cache_read_input_tokens


def test_a_scripted_tool_use_reply_streamed_and_not() -> None:
    with running(script=WEATHER) as emu, anthropic.Anthropic(base_url=emu.url, api_key="k") as c:
        msg = c.messages.create(**body("What is the weather in Paris?"))
        assert msg.stop_reason == "tool_use"
        text, call = msg.content
        assert text.type == "text" and text.text == "Let me check."
        assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
        assert call.id.startswith("toolu_")
        with c.messages.stream(**body("What is the weather in Paris?")) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "tool_use"
        assert final.content[1].model_dump() == call.model_dump()
        events = raw_events(emu.url, body("What is the weather in Paris?"))
    deltas = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == 1]
    assert deltas[0] == {"type": "input_json_delta", "partial_json": ""}
    assert json.loads("".join(d["partial_json"] for d in deltas)) == {"city": "Paris"}
