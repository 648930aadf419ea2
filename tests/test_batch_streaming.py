"""A batch's create body is streamed from the ledger: exact bytes, bounded pieces, resent whole on retry."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import query
from offload.config.settings import Settings
from offload.infra.claude import BatchBody
from offload.infra.ledger import batches as store
from offload.services.batches import SubmitArgs, submit
from offload.state import open_state
from offload_emulator.server import EmulatorHandle

pytestmark = pytest.mark.anyio

LINES = [
    json.dumps({"custom_id": f"i{i}", "params": {"text": "é" * (i % 7) + str(i)}}, ensure_ascii=False).encode()
    for i in range(50)
]


class SmallPieces(BatchBody):
    PIECE_BYTES = 64


def test_the_body_is_the_create_json_with_its_exact_length_and_streams_again_from_the_start() -> None:
    calls = []

    def lines() -> Iterator[bytes]:
        calls.append(1)
        yield from LINES

    body = SmallPieces(lines, BatchBody.length(len(line) for line in LINES))
    first = b"".join(body)
    again = b"".join(body)  # an SDK retry iterates the body again
    assert first == again and len(calls) == 2
    assert len(first) == body.size
    assert json.loads(first) == {"requests": [json.loads(line) for line in LINES]}
    # Pieces stay near PIECE_BYTES: memory holds a piece, never the whole body.
    longest = max(len(line) for line in LINES)
    assert all(len(piece) <= SmallPieces.PIECE_BYTES + longest + 2 for piece in body)
    assert len(list(body)) > 5


async def test_submitted_requests_reach_the_api_as_stored_read_a_chunk_at_a_time(
    emulator: EmulatorHandle, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    items = tuple(f"review {i}: «late» but fine" for i in range(2_345))
    settings = make_settings(emulator.url)
    async with open_state(settings) as state:
        out = await submit(state, "s", SubmitArgs(template="Classify: {item}", items=items, max_tokens=16))
    batch_id = str(out.data["batch_id"])
    assert len(out.data["api_batches"]) == 1
    # Read in chunks of 100 (as the sender does, in 2,000s), every row comes once and in order.
    rows = list(store.part_rows(settings.db_path, batch_id, 0, chunk=100))
    assert [r[0] for r in rows] == list(range(len(items)))
    stored = query(settings.db_path, "SELECT idx, body FROM batch_items WHERE batch_id = ? ORDER BY idx", batch_id)
    assert [(r[0], r[1]) for r in rows] == [(int(s["idx"]), str(s["body"])) for s in stored]
    # The emulator parsed the streamed body: every custom_id, every item's text, in order.
    (sent,) = emulator.state.batches._batches.values()
    assert [cid for cid, _ in sent.requests] == [f"i{i}" for i in range(len(items))]
    texts = [json.dumps(params["messages"], ensure_ascii=False) for _, params in sent.requests]
    assert all(item in text for item, text in zip(items, texts, strict=True))
