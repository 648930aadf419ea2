"""A connection failure names the URL it tried: a typo in ANTHROPIC_BASE_URL is not "try again later"."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from offload.config.settings import Settings
from offload.core.errors import UpstreamError
from offload.infra.claude import ClaudeClient


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: nothing listens there


@pytest.mark.anyio
async def test_unreachable_base_url_is_named(make_settings: Callable[..., Settings]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    client = ClaudeClient.from_settings(make_settings(base_url=url), max_retries=0, timeout=5)
    try:
        with pytest.raises(UpstreamError) as info:
            await client.create(
                {"model": "claude-haiku-5-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
            )
    finally:
        await client.close()
    assert info.value.kind == "connection_error"
    assert f"could not reach the Claude API at {url}/v1/messages" in str(info.value)
    assert "check ANTHROPIC_BASE_URL" in str(info.value)
