"""Attacks on the HTTP transport: the real app under uvicorn on loopback, raw HTTP requests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from helpers import uvicorn_serving
from offload.config.settings import Settings
from offload.mcp.http import BindError, build_http_app, check_bind, is_loopback

TOKEN = "tok-sec-5b2e8d1f9a7c3e4b6d0f"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _settings(tmp_path: Path, *tokens: str, **env: str) -> Settings:
    base = {
        "HOME": str(tmp_path),
        "OFFLOAD_DB": str(tmp_path / "ledger.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
        "OFFLOAD_SESSION": "sec",
        "OFFLOAD_HTTP_TOKENS": ",".join(tokens),
    }
    return Settings.from_env({**base, **env})


@contextmanager
def served(settings: Settings, *, host: str = "127.0.0.1") -> Iterator[str]:
    """The app built for `host` (what `offload serve --http HOST:PORT` builds), on 127.0.0.1."""
    with uvicorn_serving(build_http_app(settings, host=host)) as url:
        yield url


# --- binding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "", "::", "192.168.1.5", "8.8.8.8", "2001:db8::1", "localhost.evil.com", "127.0.0.1.nip.io",
     "localhost.", "0177.0.0.1", "2130706433", "::ffff:7f00:1:0"],
)  # fmt: skip
def test_exposed_or_ambiguous_binds_need_a_token(tmp_path: Path, host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(BindError, match="without a token"):
        check_bind(host, 8765, _settings(tmp_path))


# --- DNS rebinding ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "127.0.0.2", "::1", "0:0:0:0:0:0:0:1"])
async def test_loopback_without_token_refuses_foreign_host_and_origin(tmp_path: Path, host: str) -> None:
    # Every name is_loopback() lets serve without a token must also get Host/Origin checks:
    # otherwise a web page on evil.example, rebound to 127.0.0.x, could call the tools.
    assert is_loopback(host)
    with served(_settings(tmp_path), host=host) as url:
        port = url.rsplit(":", 1)[1]
        async with httpx2.AsyncClient() as http:
            rebound = await http.post(f"{url}/mcp", json=INIT, headers={**HEADERS, "Host": f"evil.example:{port}"})
            cross = await http.post(f"{url}/mcp", json=INIT, headers={**HEADERS, "Origin": "http://evil.example"})
            own = await http.post(f"{url}/mcp", json=INIT, headers=HEADERS)
    assert rebound.status_code in (403, 421), rebound.text
    assert cross.status_code == 403, cross.text
    assert own.status_code == 200, own.text


# --- tokens -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_mcp_route_and_method_needs_the_token(tmp_path: Path) -> None:
    with served(_settings(tmp_path, TOKEN)) as url:
        async with httpx2.AsyncClient() as http:
            for method in ("GET", "POST", "DELETE", "PUT", "PATCH"):
                for path in ("/mcp", "/mcp/", "/mcp/x"):
                    resp = await http.request(method, f"{url}{path}", json=INIT, headers=HEADERS)
                    # '/mcp/' is redirected to '/mcp' before anything else runs: no content either way.
                    assert resp.status_code in (401, 404, 405, 307), (method, path, resp.status_code)
                    if resp.status_code == 307:
                        assert resp.headers["location"].endswith("/mcp") and not resp.content
            bad = await http.post(f"{url}/mcp", json=INIT, headers={**HEADERS, "Authorization": f"Bearer {TOKEN[:-1]}"})
            good = await http.post(f"{url}/mcp", json=INIT, headers={**HEADERS, "Authorization": f"Bearer {TOKEN}"})
            health = await http.get(f"{url}/healthz")
    assert bad.status_code == 401 and good.status_code == 200
    assert set(health.json()) == {"ok", "name", "version", "ledger"}


@pytest.mark.anyio
async def test_tokens_never_reach_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _settings(tmp_path, TOKEN)
    with served(settings) as url:
        async with httpx2.AsyncClient() as http:
            for token in (TOKEN, TOKEN + "x", "wrong"):
                await http.post(f"{url}/mcp", json=INIT, headers={**HEADERS, "Authorization": f"Bearer {token}"})
    assert caplog.records  # something was logged, so the absence means something
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(settings)


def test_indented_comment_in_token_file_is_not_a_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# offload tokens\n  # revoked: old-token\n\tnew-token-1234567890\n\n")
    settings = _settings(tmp_path, OFFLOAD_HTTP_TOKEN_FILE=str(tokens))
    assert settings.http_tokens == ("new-token-1234567890",)
