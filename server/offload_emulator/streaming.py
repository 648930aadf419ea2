"""A finished Message replayed as the API's server-sent events (``stream: true``).

Event order and shapes follow "Streaming Messages"
(https://platform.claude.com/docs/en/build-with-claude/streaming): ``message_start`` (the
Message with empty ``content``; its usage carries the input side, cache fields included, as
the prompt-caching page says, and ``output_tokens: 1`` as in the docs' example), then per
content block ``content_block_start`` / one or more ``content_block_delta`` /
``content_block_stop``, a ``ping``, one ``message_delta`` whose usage is cumulative ("The token
counts shown in the usage field of the message_delta event are cumulative") and a final
``message_stop``. Text arrives as ``text_delta``s, tool input as ``input_json_delta``
``partial_json`` chunks, the first one empty, as in the docs' tool-use stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from . import tokenizer

TOKENS_PER_DELTA = 8
JSON_CHARS_PER_DELTA = 24


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def _text_chunks(text: str) -> Iterator[str]:
    pieces = tokenizer.pieces(text)
    for i in range(0, len(pieces), TOKENS_PER_DELTA):
        yield "".join(pieces[i : i + TOKENS_PER_DELTA])


def _block_events(index: int, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if block["type"] == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        yield {"type": "content_block_start", "index": index, "content_block": start}
        raw = json.dumps(block["input"], separators=(",", ":"))
        parts = [""] + [raw[i : i + JSON_CHARS_PER_DELTA] for i in range(0, len(raw), JSON_CHARS_PER_DELTA)]
        for part in parts:
            delta = {"type": "input_json_delta", "partial_json": part}
            yield {"type": "content_block_delta", "index": index, "delta": delta}
    else:
        start = {"type": "text", "text": "", "citations": None}
        yield {"type": "content_block_start", "index": index, "content_block": start}
        for chunk in _text_chunks(block["text"]) if block["text"] else [""]:
            yield {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": chunk}}
    yield {"type": "content_block_stop", "index": index}


def events(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The events a streaming request for ``message`` receives, in order."""
    usage = message["usage"]
    start_usage = dict(usage, output_tokens=min(1, usage["output_tokens"]))
    started = dict(message, content=[], stop_reason=None, stop_sequence=None, usage=start_usage)
    yield {"type": "message_start", "message": started}
    for index, block in enumerate(message["content"]):
        yield from _block_events(index, block)
        if index == 0:
            yield {"type": "ping"}
    delta_usage = {
        key: usage[key]
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    }
    delta = {
        "stop_reason": message["stop_reason"],
        "stop_sequence": message["stop_sequence"],
        "stop_details": None,
        "container": None,
    }
    yield {"type": "message_delta", "delta": delta, "usage": delta_usage}
    yield {"type": "message_stop"}
