"""`offload dashboard`: one self-contained page (inline JS + SVG, nothing fetched from the
internet) and the JSON it polls, served by uvicorn on loopback by default.

Off loopback the same rule as `serve --http` applies (`check_bind`: a bearer token or no
server), and every `/api/*` request must carry a configured token; the page reads it from the
URL fragment (`#token=...`, never sent to the server) and sends it as `Authorization: Bearer`.
The page itself holds no data, so it is served without one. On loopback without tokens, a
Host header naming anything but a loopback address is refused (DNS rebinding).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from offload.cli import dashboard_data as data
from offload.cli.serve import one_line
from offload.config.claude_dir import transcripts_dir
from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.errors import InputError, OffloadError
from offload.infra.ledger import windows as w
from offload.mcp.http import BindError, bearer_ok, bearer_verifier, bind_socket, check_bind, rebound, unauthorized

DEFAULT_PORT = 8766
DEFAULT_SINCE = "30d"


def page() -> str:
    return resources.files("offload.cli").joinpath("dashboard.html").read_text(encoding="utf-8")


def build_app(
    settings: Settings, *, transcripts: Path | None = None, clock: Callable[[], datetime] = w.utcnow
) -> Starlette:
    prices = load_prices(overlay=settings.pricing_path)
    verifier = bearer_verifier(settings)
    host_bill = data.HostBillCache(transcripts or transcripts_dir(), prices)
    memo = data.Memo()
    db = settings.db_path

    async def guarded(request: Request, build: Callable[[datetime, datetime, str], dict[str, Any]]) -> Response:
        if (refused := rebound(request, verifier)) is not None:
            return refused
        if not await bearer_ok(request, verifier):
            return unauthorized()
        # Whole minutes: a period's start then stays put across the page's polls, so the memo hits.
        now = clock().replace(second=0, microsecond=0)
        try:
            since = w.parse_since(request.query_params.get("since") or DEFAULT_SINCE, now)
        except ValueError as exc:
            return JSONResponse({"error": str(exc).replace("--since", "since")}, 400)
        by = request.query_params.get("by") or data.BY[0]
        if by not in data.BY:
            return JSONResponse({"error": f"by={by!r}: expected one of {', '.join(data.BY)}"}, 400)
        try:
            doc = await run_in_threadpool(build, since, now, by)
        except InputError as exc:
            return JSONResponse({"error": str(exc)}, 500)
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    async def index(_: Request) -> Response:
        return HTMLResponse(page(), headers={"Cache-Control": "no-store"})

    async def summary(request: Request) -> Response:
        return await guarded(request, lambda since, now, _by: data.summary(db, prices, since, now, memo))

    async def series(request: Request) -> Response:
        # One breakdown per request: each is a scan of the period's rows; the page asks for the one shown.
        return await guarded(request, lambda since, now, by: data.series(db, since, now, memo, by=by))

    async def sessions(request: Request) -> Response:
        return await guarded(request, lambda since, _now, _by: data.sessions(db, host_bill, since, memo))

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/summary", summary),
            Route("/api/series", series),
            Route("/api/sessions", sessions),
        ]
    )


def cmd_dashboard(settings: Settings, *, host: str, port: int, transcripts: Path | None) -> int:
    try:
        check_bind(host, port, settings)
        app = build_app(settings, transcripts=transcripts)  # a bad OFFLOAD_PRICING: refused before any URL
        sock = bind_socket(host, port)
    except (BindError, OffloadError) as exc:
        print(f"offload dashboard: {one_line(exc)}", file=sys.stderr)
        return 2
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    # The first stdout line is the URL (tests and scripts read it to find a --port 0 server).
    print(f"offload dashboard on http://{shown}:{bound_port}/ (ledger {settings.db_path})", flush=True)
    if settings.http_tokens:  # the page reads it from the fragment, which browsers never send
        print(
            f"the data needs a token: open http://{shown}:{bound_port}/#token=<one of OFFLOAD_HTTP_TOKENS>", flush=True
        )
    config = uvicorn.Config(app, log_config=None, log_level="warning")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
