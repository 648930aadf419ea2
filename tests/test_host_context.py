"""The host pays for `tools/list` on every turn: the whole answer stays under ~1,200 tokens.

Serialized exactly as the wire carries it, through the real server and the real mcp client.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from helpers import CONTRACT_TOOLS
from offload.config.settings import Settings
from offload.mcp.server import build_server

MAX_TOOLS_LIST_CHARS = 4_800  # ≈ 1,200 tokens at ~4 characters per token


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"HOME": str(tmp_path), "OFFLOAD_DB": str(tmp_path / "l.db"), "OFFLOAD_ROOTS": str(tmp_path)}
    )


@pytest.mark.anyio
async def test_tools_list_fits_the_host_budget_and_keeps_every_contract_name(settings: Settings) -> None:
    async with Client(build_server(settings)) as c:
        result = await c.list_tools()
    wire = json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))
    names = [t.name for t in result.tools]
    assert sorted(names) == sorted(CONTRACT_TOOLS), f"tools/list names: {names}"
    per_tool = {
        t.name: len(json.dumps(t.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":")))
        for t in result.tools
    }
    assert len(wire) < MAX_TOOLS_LIST_CHARS, f"tools/list is {len(wire)} chars; per tool: {per_tool}"


@pytest.mark.anyio
async def test_every_tool_has_a_description_and_an_object_schema(settings: Settings) -> None:
    async with Client(build_server(settings)) as c:
        tools = (await c.list_tools()).tools
    for tool in tools:
        assert tool.description and len(tool.description) <= 200, tool.name
        assert tool.input_schema.get("type") == "object", tool.name
        # A `ctx` parameter leaking into the schema would cost tokens and confuse the model.
        assert "ctx" not in tool.input_schema.get("properties", {}), tool.name
