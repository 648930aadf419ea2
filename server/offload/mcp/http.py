"""Streamable HTTP transport: bearer-token auth, a loopback-only default, `/healthz` and `/metrics`.

Auth uses the SDK's own seam (`token_verifier` + `AuthSettings`) rather than a hand-rolled
middleware because the SDK then binds every MCP session to the principal that opened it: a
client holding token A gets "session not found" for a session opened with token B. Each
configured token becomes one principal (`token-1`, `token-2`, ... by position in the list).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from offload import __version__
from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.infra.ledger.db import probe
from offload.mcp.metrics import CONTENT_TYPE, metrics_text
from offload.mcp.server import build_server, configure_logging, has_uvloop
from offload.state import AppState

if TYPE_CHECKING:
    from mcp.server import MCPServer
    from starlette.applications import Starlette

log = logging.getLogger("offload.mcp.http")

MCP_PATH = "/mcp"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
EXIT_USAGE = 2
MIN_TOKEN_CHARS = 32  # for binds other machines can reach; loopback accepts any token

# The SDK requires an issuer URL, but it is only published when the server is itself an OAuth
# authorization server or advertises resource metadata; offload is neither, so `.invalid` (a
# reserved, never-resolving TLD) makes it obvious that no real issuer is involved.
_STATIC_ISSUER = "https://static-tokens.offload.invalid"


class BindError(ValueError):
    """A `--http HOST:PORT` value that cannot or must not be served; str() says what to send instead."""


class StaticTokenVerifier:
    """Accepts exactly the configured tokens, compared in constant time."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        if not tokens:
            raise ValueError("StaticTokenVerifier needs at least one token")
        # Comparing fixed-length digests hides the tokens' lengths as well as their contents.
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens]

    async def verify_token(self, token: str) -> AccessToken | None:
        offered = hashlib.sha256(token.encode()).digest()
        match = 0
        # No early exit: the time taken does not depend on which token (if any) matched.
        for index, digest in enumerate(self._digests, start=1):
            if hmac.compare_digest(offered, digest) and not match:
                match = index
        if not match:
            return None
        return AccessToken(token=token, client_id=f"token-{match}", scopes=[])


def auth_kwargs(settings: Settings) -> dict[str, Any]:
    """`build_server` keyword arguments that turn on bearer auth when tokens are configured."""
    if not settings.http_tokens:
        return {}
    return {
        "token_verifier": StaticTokenVerifier(settings.http_tokens),
        "auth": AuthSettings(issuer_url=AnyHttpUrl(_STATIC_ISSUER), resource_server_url=None),
    }


def parse_bind(spec: str) -> tuple[str, int]:
    """`HOST:PORT`, `[::1]:PORT`, `:PORT` (all interfaces) or a bare `PORT` (loopback) -> (host, port)."""
    if spec.isdigit():
        spec = f"127.0.0.1:{spec}"
    host, sep, port_text = spec.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise BindError(f"--http {spec!r}: expected [HOST:]PORT, e.g. 8765, 127.0.0.1:8765 or [::1]:8765")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True only for addresses no other machine can reach: 127.0.0.0/8, ::1, localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (all interfaces), 0.0.0.0, other names: reachable from elsewhere


def check_bind(host: str, port: int, settings: Settings) -> None:
    """Refuse to expose an unauthenticated (or guessably authenticated) server beyond this machine."""
    if is_loopback(host):
        return
    shown = host or "all interfaces"
    if not settings.http_tokens:
        raise BindError(
            f"refusing to serve HTTP on {shown}:{port} without a token: anyone who can reach it could "
            "spend on your API key. Set OFFLOAD_HTTP_TOKENS=<token>[,<token>...] or "
            "OFFLOAD_HTTP_TOKEN_FILE=<file, one token per line>, or bind 127.0.0.1."
        )
    short = [i for i, t in enumerate(settings.http_tokens, start=1) if len(t) < MIN_TOKEN_CHARS]
    if short:
        names = ", ".join(f"token-{i}" for i in short)  # never the token itself
        raise BindError(
            f"refusing to serve HTTP on {shown}:{port}: {names} is shorter than {MIN_TOKEN_CHARS} characters, "
            "guessable from the network. Use e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )


class RedactQuery(logging.Filter):
    """Access-log lines keep the path, never the query string: a client that put its token in
    the URL (`?token=...`) must not leave it in the server's logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


def add_health_route(server: MCPServer[AppState], settings: Settings | None = None) -> None:
    # Custom routes sit outside the SDK's auth wrapper: probes need no token, so this says
    # nothing beyond liveness, version and whether the ledger answers (why not goes to the log).
    # A replica whose shared ledger is unreachable answers 503, so a load balancer drains it.
    async def healthz(_: Request) -> Response:
        body: dict[str, object] = {"ok": True, "name": "offload", "version": __version__}
        if settings is None:
            return JSONResponse(body)
        why = await probe(settings.ledger_target)
        if why is not None:
            log.warning("healthz: the ledger is unreachable: %s", why)
            return JSONResponse({**body, "ok": False, "ledger": "unreachable"}, 503)
        return JSONResponse({**body, "ledger": "ok"})

    server.custom_route(HEALTH_PATH, methods=["GET"], include_in_schema=False)(healthz)


def bearer_verifier(settings: Settings) -> StaticTokenVerifier | None:
    return StaticTokenVerifier(settings.http_tokens) if settings.http_tokens else None


async def bearer_ok(request: Request, verifier: StaticTokenVerifier | None) -> bool:
    """True when no tokens are configured or the request carries one of them."""
    if verifier is None:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and await verifier.verify_token(token.strip()) is not None


def request_hostname(request: Request) -> str:
    """The Host header's name without its port (`[::1]:80` -> `::1`)."""
    host = request.headers.get("host", "")
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def foreign_host(request: Request, verifier: StaticTokenVerifier | None) -> bool:
    """Served without tokens (so on loopback) but asked for under another name: DNS rebinding."""
    return verifier is None and not is_loopback(request_hostname(request))


def unauthorized() -> Response:
    return JSONResponse({"error": "send Authorization: Bearer <token>"}, 401, {"WWW-Authenticate": "Bearer"})


def host_name(request: Request) -> str:
    """The Host header without its port ("[::1]:80" -> "::1")."""
    host = request.headers.get("host", "")
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def rebound(request: Request, verifier: StaticTokenVerifier | None) -> Response | None:
    """421 for a tokenless request whose Host is not a loopback name, else None.

    Without tokens the only guard is the loopback bind, and a web page whose name was rebound to
    127.0.0.1 passes it: its requests are same-origin to the browser but carry the page's name.
    """
    if verifier is None and not is_loopback(host_name(request)):
        return JSONResponse({"error": "without a token this server answers only on a loopback host name"}, 421)
    return None


def add_metrics_route(server: MCPServer[AppState], settings: Settings) -> None:
    # Outside the SDK's auth wrapper like /healthz, but spend is not for anyone who can reach the
    # port: with tokens configured a scrape must carry one.
    verifier, prices = bearer_verifier(settings), load_prices(overlay=settings.pricing_path)

    async def metrics(request: Request) -> Response:
        if (refused := rebound(request, verifier)) is not None:
            return refused
        if not await bearer_ok(request, verifier):
            return unauthorized()
        text = await run_in_threadpool(metrics_text, settings.db_path, prices)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    server.custom_route(METRICS_PATH, methods=["GET"], include_in_schema=False)(metrics)


def http_app(server: MCPServer[AppState], *, host: str = "127.0.0.1", settings: Settings | None = None) -> Starlette:
    """The ASGI app for an already-built server (`/mcp`, `/healthz`, and `/metrics` given settings).

    On a loopback host, Host/Origin checks block DNS rebinding (a web page whose name was
    rebound to 127.0.0.1 calling the tools); off loopback a token is mandatory, and a browser
    page cannot attach it.
    """
    add_health_route(server, settings)
    if settings is not None:
        add_metrics_route(server, settings)
    return server.streamable_http_app(
        streamable_http_path=MCP_PATH, host=host, transport_security=rebinding_protection(host)
    )


def rebinding_protection(host: str) -> TransportSecuritySettings | None:
    """Host/Origin allow-lists for every name `is_loopback` admits, not only the SDK's three.

    The SDK turns the checks on for exactly "127.0.0.1", "localhost" and "::1"; a server bound to
    127.0.0.2, "LOCALHOST" or "0:0:0:0:0:0:0:1" runs tokenless too, and would have had none.
    """
    if not is_loopback(host):
        return None
    names = {"127.0.0.1", "localhost", "[::1]", host.lower()}
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        names.discard(host.lower())
        names.add(f"[{ip.compressed}]" if ip.version == 6 else ip.compressed)
    ordered = sorted(names)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{n}:*" for n in ordered],
        allowed_origins=[f"http://{n}:*" for n in ordered],
    )


def build_http_app(settings: Settings, *, host: str = "127.0.0.1") -> Starlette:
    """A complete ASGI app from settings alone (auth on when `settings.http_tokens` is set)."""
    return http_app(_build(settings), host=host, settings=settings)


def _build(settings: Settings) -> MCPServer[AppState]:
    return build_server(settings, **auth_kwargs(settings))


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {host or '*'}:{port}: {exc.strerror}") from None
    except OverflowError:
        sock.close()
        raise BindError(f"port {port}: expected 0-65535 (0: any free port)") from None
    sock.set_inheritable(True)
    return sock


HTTP_SHUTDOWN_GRACE_S = 5


def serve_http(settings: Settings, spec: str, *, server: MCPServer[AppState] | None = None) -> int:
    """Serve over streamable HTTP on `spec` (HOST:PORT) until interrupted; returns the exit code.

    Every refusal (bad spec, exposed without a token, port taken) happens before the server
    starts, prints one line to stderr and returns 2. `server` defaults to
    `build_server(settings, **auth_kwargs(settings))`.
    """
    configure_logging()

    try:
        host, port = parse_bind(spec)
        check_bind(host, port, settings)
        if server is not None and settings.http_tokens and server.settings.auth is None:
            raise BindError("tokens are configured but the server was built without auth_kwargs(settings)")
        if server is None:
            server = _build(settings)
        sock = bind_socket(host, port)
    except BindError as exc:
        print(f"offload serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    log.info(
        "serving MCP on http://%s:%d%s (auth: %s)",
        shown,
        bound_port,
        MCP_PATH,
        f"{len(settings.http_tokens)} bearer token(s)" if settings.http_tokens else "none, loopback only",
    )
    logging.getLogger("uvicorn.access").addFilter(RedactQuery())
    config = uvicorn.Config(
        http_app(server, host=host, settings=settings),
        loop="uvloop" if has_uvloop() else "asyncio",
        log_config=None,  # keep our stderr logging; uvicorn's default sends access logs to stdout
        lifespan="on",
        # On SIGTERM uvicorn waits for open requests, without a limit unless given one; a supervisor
        # (docker stop: 10 s, then SIGKILL) would kill the server mid-wait with its holds left for
        # its lease. Past this, calls still open are stopped and the close releases their holds.
        timeout_graceful_shutdown=HTTP_SHUTDOWN_GRACE_S,
    )
    uv = uvicorn.Server(config)
    # A hangup (the terminal or ssh session gone) stops the server the way SIGTERM does; its default
    # action killed it with its holds left.
    if hasattr(signal, "SIGHUP"):  # POSIX
        signal.signal(signal.SIGHUP, uv.handle_exit)
    try:
        uv.run(sockets=[sock])
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass
    finally:
        sock.close()
    return 0
