"""Streamable HTTP: the real server under uvicorn on a loopback port, the real mcp client.

Auth, /healthz, the loopback-only refusal and per-caller budget sessions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from helpers import uvicorn_serving
from offload import __version__
from offload.config.settings import Settings
from offload.mcp.http import (
    BindError,
    StaticTokenVerifier,
    bind_socket,
    build_http_app,
    check_bind,
    is_loopback,
    parse_bind,
    serve_http,
)
from offload.mcp.session import http_session_id

TOKEN_A = "tok-A-8f3c1e9d2b7a4c6e"
TOKEN_B = "tok-B-1d5e7f9a3c2b4e6d"


def _settings(tmp_path: Path, *tokens: str, session: str = "srv") -> Settings:
    env = {
        "HOME": str(tmp_path),
        "OFFLOAD_DB": str(tmp_path / "ledger.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
        "OFFLOAD_SESSION": session,
        "OFFLOAD_HTTP_TOKENS": ",".join(tokens),
    }
    return Settings.from_env(env)


@dataclass
class Running:
    url: str  # base, e.g. http://127.0.0.1:54321

    @property
    def mcp(self) -> str:
        return f"{self.url}/mcp"


@contextmanager
def http_server(settings: Settings) -> Iterator[Running]:
    """The real ASGI app under uvicorn in a thread, on a port the kernel picked."""
    with uvicorn_serving(build_http_app(settings)) as url:
        yield Running(url)


@asynccontextmanager
async def client(url: str, token: str | None, *, mode: str = "auto") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as c,
    ):
        yield c


def _reported_session(result: Any) -> str:
    """The budget session budget_status says this call was counted against."""
    data = result.structured_content
    assert isinstance(data, dict) and isinstance(data.get("session"), str), result
    return str(data["session"])


# --- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:8765", ("127.0.0.1", 8765)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9000", ("::1", 9000)),
        (":8080", ("", 8080)),
        ("8765", ("127.0.0.1", 8765)),  # a bare port is loopback, never all interfaces
    ],
)
def test_parse_bind(spec: str, expected: tuple[str, int]) -> None:
    assert parse_bind(spec) == expected


@pytest.mark.parametrize("spec", ["70000", "host:", "host:port", "127.0.0.1:70000"])
def test_parse_bind_rejects_with_example(spec: str) -> None:
    with pytest.raises(BindError, match=r"expected \[HOST:\]PORT, e\.g\. 8765, 127\.0\.0\.1:8765"):
        parse_bind(spec)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_bind_allows_anything_once_a_long_token_is_set(tmp_path: Path) -> None:
    check_bind("0.0.0.0", 80, _settings(tmp_path, TOKEN_A + "-long-enough-for-a-public-bind"))
    with pytest.raises(BindError, match="token-1 is shorter than 32"):
        check_bind("0.0.0.0", 80, _settings(tmp_path, TOKEN_A))
    check_bind("127.0.0.1", 80, _settings(tmp_path))
    with pytest.raises(BindError, match="OFFLOAD_HTTP_TOKENS"):
        check_bind("10.0.0.1", 80, _settings(tmp_path))


@pytest.mark.anyio
async def test_static_token_verifier_labels_tokens_by_position() -> None:
    verifier = StaticTokenVerifier((TOKEN_A, TOKEN_B))
    a, b = await verifier.verify_token(TOKEN_A), await verifier.verify_token(TOKEN_B)
    assert a is not None and a.client_id == "token-1"
    assert b is not None and b.client_id == "token-2"
    assert await verifier.verify_token(TOKEN_A[:-1]) is None
    assert await verifier.verify_token(TOKEN_A + "x") is None
    assert await verifier.verify_token("") is None


def test_http_session_id_order() -> None:
    assert http_session_id("s1", "0123456789abcdef0123", "token-1") == "s1:token-1:0123456789ab"
    assert http_session_id("s1", None, "token-2") == "s1:token-2"
    assert http_session_id("s1", None, None) == "s1:http"
    assert http_session_id("s1", "abc", None) == "s1:http:abc"
    # Ids are cut down to printable, short ids before they reach the ledger.
    assert http_session_id("s1", "a b\n;c", "tok en") == "s1:token:abc"
    assert http_session_id("s1", " \n", None) == "s1:http"


# --- refusal before binding -------------------------------------------------------------


def test_non_loopback_without_token_exits_2_before_binding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_http(_settings(tmp_path), "0.0.0.0:0") == 2
    err = capsys.readouterr().err
    assert "refusing to serve HTTP on 0.0.0.0:0 without a token" in err
    assert "OFFLOAD_HTTP_TOKENS" in err and "OFFLOAD_HTTP_TOKEN_FILE" in err
    # Refused before anything was opened: the ledger file was never created.
    assert not (tmp_path / "ledger.db").exists()


def test_taken_port_exits_2_with_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holder = bind_socket("127.0.0.1", 0)
    try:
        port = holder.getsockname()[1]
        # SO_REUSEADDR does not allow two listeners on one port.
        assert serve_http(_settings(tmp_path), f"127.0.0.1:{port}") == 2
    finally:
        holder.close()
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_bad_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_http(_settings(tmp_path), "localhost") == 2
    assert "expected [HOST:]PORT" in capsys.readouterr().err


# --- the running server -----------------------------------------------------------------


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Running]:
    with http_server(_settings(tmp_path, TOKEN_A, TOKEN_B)) as srv:
        yield srv


@pytest.mark.anyio
async def test_healthz_needs_no_token_and_reveals_nothing(secured: Running) -> None:
    async with httpx2.AsyncClient() as http:
        resp = await http.get(f"{secured.url}/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"ok": True, "name": "offload", "version": __version__, "ledger": "ok"}
    assert TOKEN_A not in resp.text


@pytest.mark.anyio
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", f"Basic {TOKEN_A}", f"Bearer {TOKEN_A}x"])
async def test_missing_or_wrong_token_is_401_with_bearer_challenge(secured: Running, auth: str | None) -> None:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx2.AsyncClient() as http:
        resp = await http.post(secured.mcp, json=body, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer ")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28 (sessionless) and handshake era
async def test_client_with_token_lists_tools(secured: Running, mode: str) -> None:
    async with client(secured.mcp, TOKEN_B, mode=mode) as c:
        tools = await c.list_tools()
    names = {t.name for t in tools.tools}
    assert {"routed_complete", "trim_result", "budget_status"} <= names


@pytest.mark.anyio
async def test_each_mcp_session_is_its_own_budget_session(secured: Running) -> None:
    async with (
        client(secured.mcp, TOKEN_A, mode="legacy") as one,
        client(secured.mcp, TOKEN_A, mode="legacy") as two,
    ):
        first = _reported_session(await one.call_tool("budget_status", {"scope": "session"}))
        again = _reported_session(await one.call_tool("budget_status", {"scope": "session"}))
        second = _reported_session(await two.call_tool("budget_status", {"scope": "session"}))
    assert first == again, "one MCP session must keep one budget session"
    assert first != second
    assert first.startswith("srv:") and second.startswith("srv:")


@pytest.mark.anyio
async def test_sessionless_requests_are_budgeted_per_token(secured: Running) -> None:
    async with client(secured.mcp, TOKEN_A) as a, client(secured.mcp, TOKEN_B) as b:
        assert a.protocol_version == "2026-07-28"  # no Mcp-Session-Id on this protocol
        sa = _reported_session(await a.call_tool("budget_status", {"scope": "session"}))
        sb = _reported_session(await b.call_tool("budget_status", {"scope": "session"}))
    assert (sa, sb) == ("srv:token-1", "srv:token-2")


def test_loopback_without_tokens_serves_without_auth(tmp_path: Path) -> None:
    import anyio

    async def list_names(url: str) -> set[str]:
        async with client(url, None) as c:
            return {t.name for t in (await c.list_tools()).tools}

    with http_server(_settings(tmp_path)) as srv:
        assert "budget_status" in anyio.run(list_names, srv.mcp)
