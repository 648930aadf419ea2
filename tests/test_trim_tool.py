"""trim_result end to end: real MCP client → server → handles in SQLite → (only for an unanswerable
query) the real SDK over HTTP → emulator, with every paid call in the ledger."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from offload.config.settings import Settings
from offload.core.money import usd_json
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio


def db_rows(db: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def message_calls(emu: Any) -> list[Any]:
    return [r for r in emu.state.calls("/v1/messages") if r.status == 200]


def text_of(result: Any) -> str:
    assert not result.is_error, result.content
    return str(result.content[0].text)


def paginated_api() -> str:
    items = [
        {
            "id": i,
            "name": f"order-{i}",
            "status": "shipped" if i % 7 else "failed",
            "customer": {"id": 1000 + i, "email": f"c{i}@example.com", "notes": None},
            "lines": [{"sku": f"SKU-{i}-{j}", "qty": j + 1} for j in range(3)],
            "tags": [],
        }
        for i in range(400)
    ]
    return json.dumps({"data": items, "page": 1, "per_page": 400, "next": "/api/orders?page=2"})


def ci_log() -> str:
    lines = [
        f"2025-03-01 10:{i // 60 % 60:02d}:{i % 60:02d} INFO tests/test_shop.py::test_{i} PASSED" for i in range(4000)
    ]
    lines.insert(2500, "2025-03-01 10:41:40 ERROR tests/test_shop.py::test_checkout FAILED")
    lines.insert(2501, "E   AssertionError: expected status 200, got 503")
    lines.append("==== 1 failed, 4000 passed in 81.20s ====")
    return "\n".join(lines) + "\n"


async def test_trim_by_content_is_local_free_and_keeps_a_handle(
    emulator: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(emulator.url)
    content = paginated_api()
    async with Client(build_server(settings)) as c:
        result = await c.call_tool("trim_result", {"content": content, "fields": "data[].{id: id, status: status}"})
    text = text_of(result)
    data = result.structured_content
    assert data is not None
    body, footer = text.rsplit("\n", 1)
    assert footer.startswith("[json · ") and f"handle {data['handle']}]" in footer
    assert data["kind"] == "json" and data["cost_usd"] == "0"
    assert data["tokens_in"] > 20 * data["tokens_out"]  # a large reduction
    assert '"status": "failed"' in body or '"status":"failed"' in body
    assert "email" not in body  # only the asked-for fields
    assert message_calls(emulator) == []  # nothing went to a model
    assert db_rows(settings.db_path, "SELECT * FROM attempts") == []
    (row,) = db_rows(settings.db_path, "SELECT id, kind, bytes FROM handles")
    assert (row["id"], row["kind"], row["bytes"]) == (data["handle"], "json", len(content.encode()))


async def test_trim_by_path_then_reslice_by_handle_without_resending(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(emulator.url)
    log = tmp_path / "ci" / "build.log"
    log.parent.mkdir()
    log.write_text(ci_log())
    api = tmp_path / "orders.json"
    api.write_text(paginated_api())
    async with Client(build_server(settings)) as c:
        from_log = await c.call_tool("trim_result", {"path": "ci/build.log", "max_tokens": 300})
        first = await c.call_tool("trim_result", {"path": str(api), "fields": "data[].id"})
        data = first.structured_content
        assert data is not None
        # The second request carries only the handle and a new slice: not the content, not the path.
        args = {"handle": data["handle"], "fields": "data[?status=='failed'].customer.email"}
        second = await c.call_tool("trim_result", args)
    log_text = text_of(from_log)
    assert "test_checkout FAILED" in log_text and "AssertionError: expected status 200, got 503" in log_text
    assert "1 failed, 4000 passed" in log_text
    assert from_log.structured_content is not None and from_log.structured_content["kind"] == "log"
    assert from_log.structured_content["tokens_out"] <= 300

    first_text, second_text = text_of(first), text_of(second)
    assert "email" not in first_text and "c7@example.com" not in first_text
    assert set(args) == {"handle", "fields"} and len(json.dumps(args)) < 100
    again = second.structured_content
    assert again is not None and again["handle"] == data["handle"] and again["cost_usd"] == "0"
    assert again["tokens_in"] == data["tokens_in"]  # the whole original was there to reslice
    assert "c7@example.com" in second_text and "c8@example.com" not in second_text
    assert message_calls(emulator) == []
    assert len(db_rows(settings.db_path, "SELECT id FROM handles")) == 2


async def test_unknown_handle_and_bad_source_combinations_say_what_to_send(
    emulator: Any, make_settings: Callable[..., Settings]
) -> None:
    async with Client(build_server(make_settings(emulator.url))) as c:
        none = await c.call_tool("trim_result", {"max_tokens": 100})
        both = await c.call_tool("trim_result", {"content": "x", "handle": "h_0"})
        unknown = await c.call_tool("trim_result", {"handle": "h_000000000000"})
        empty = await c.call_tool("trim_result", {"content": "   "})
    assert none.is_error and "send one of content" in str(none.content[0].text)  # type: ignore[union-attr]
    assert both.is_error and "got content and handle" in str(both.content[0].text)  # type: ignore[union-attr]
    assert unknown.is_error and "unknown or expired" in str(unknown.content[0].text)  # type: ignore[union-attr]
    assert empty.is_error and "content is empty" in str(empty.content[0].text)  # type: ignore[union-attr]


async def test_path_outside_the_roots_is_refused_clearly(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
    outside.write_text("token=abc\n")
    settings = make_settings(emulator.url)
    (settings.roots[0] / "escape.txt").symlink_to(outside)
    async with Client(build_server(settings)) as c:
        direct = await c.call_tool("trim_result", {"path": str(outside)})
        via_link = await c.call_tool("trim_result", {"path": "escape.txt"})
    for result in (direct, via_link):
        assert result.is_error
        msg = str(result.content[0].text)  # type: ignore[union-attr]
        assert "outside the allowed roots" in msg and "OFFLOAD_ROOTS" in msg
        assert "token=abc" not in msg
    assert db_rows(settings.db_path, "SELECT id FROM handles") == []


async def test_query_goes_to_the_cheap_tier_only_when_the_trim_cannot_answer(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # The log is ~62k tokens: two extraction calls; only the part holding the answer has one.
    script = [
        {"match": "region=eu-west-3", "reply": "Deploy region: eu-west-3 (line 'region=eu-west-3')."},
        {"match": "Extract what answers", "reply": "NONE"},
    ]
    content = ci_log().replace("INFO tests/test_shop.py::test_7 PASSED", "INFO deploy target region=eu-west-3")
    with running(script=script) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            answerable = await c.call_tool("trim_result", {"content": content, "query": "test_checkout"})
            assert message_calls(emu) == []  # the deterministic trim answered: no model call
            paid = await c.call_tool(
                "trim_result", {"content": content, "query": "which datacenter hosts production", "max_tokens": 200}
            )
        calls = message_calls(emu)

    assert "test_checkout FAILED" in text_of(answerable)
    free = answerable.structured_content
    assert free is not None and free["cost_usd"] == "0" and free["query_answered"] is True

    text = text_of(paid)
    data = paid.structured_content
    assert data is not None
    assert text.startswith("Deploy region: eu-west-3") and "NONE" not in text
    rows = db_rows(settings.db_path, "SELECT * FROM attempts")
    assert len(calls) == len(rows) == data["calls"] == 2
    assert {(r["tool"], r["tier"], r["model"]) for r in rows} == {("trim_result", "cheap", "claude-haiku-5-5")}
    assert data["cost_usd"] == usd_json(sum(r["cost_pusd"] for r in rows)) and all(r["cost_pusd"] > 0 for r in rows)
    assert data["usage"]["output_tokens"] == sum(r["output_tokens"] for r in rows)
    assert data["query_answered"] is False and data["answered_by"] == "claude-haiku-5-5"
    footer = text.splitlines()[-1]
    assert "query answered by haiku-5-5 for $" in footer and f"handle {data['handle']}" in footer
    # The question sits in the shared system prompt (same bytes for both parts), the content in
    # the messages: every line of the log went to exactly one of the two calls.
    systems = {json.dumps(c.body["system"]) for c in calls}
    assert len(systems) == 1 and "which datacenter hosts production" in systems.pop()
    sent = "".join(c.body["messages"][0]["content"][-1]["text"] for c in calls)
    assert sent.count("region=eu-west-3") == 1 and sent.count("test_checkout FAILED") == 1
    assert all(c.body["max_tokens"] <= 200 for c in calls)
