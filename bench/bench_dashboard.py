"""`offload dashboard` on a 100,000-row ledger: page weight and time to first render.

    python bench/bench_dashboard.py [--quick]

A ledger of N attempts (30 days, 3 models, 3 tiers, 5 tools, 200 sessions) is written through
`record_many`, the dashboard app is served by uvicorn on loopback, and headless Chromium
(Debian's /usr/bin/chromium via Playwright) loads it until every chart has drawn. The baseline,
in the same run and browser, is a static HTML page of the same total weight (page + the three
JSON documents) holding the same figures as a plain table: the ratio is what querying the
ledger and drawing the SVG charts cost over merely shipping and laying out those bytes.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Row, ms, ratio  # noqa: E402
from offload.cli.dashboard import build_app  # noqa: E402
from offload.config.settings import Settings  # noqa: E402
from offload.core.pricing import Usage  # noqa: E402
from offload.infra.ledger.budgets import BudgetLimits  # noqa: E402
from offload.infra.ledger.db import Ledger  # noqa: E402
from offload.infra.ledger.records import Attempt, record_many, record_policy  # noqa: E402
from offload.mcp.http import bind_socket  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
MODELS = (("claude-haiku-5-5", "cheap"), ("claude-sonnet-5-5", "standard"), ("claude-opus-5-5", "premium"))
TOOLS = ("routed_complete", "batch_submit", "summarize_context", "trim_result", "routed_complete")


async def fill(db: Path, rows: int) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC)
    led = await Ledger.open(db)
    try:
        chunk: list[Attempt] = []
        for i in range(rows):
            model, tier = rng.choice(MODELS)
            u = Usage(rng.randint(10, 4000), rng.randint(5, 800), cache_read=rng.choice((0, 0, 2048, 8192)))
            cost = u.input_tokens * 100_000 + u.output_tokens * 500_000 + u.cache_read * 10_000
            ts = now - timedelta(seconds=rng.randint(0, 30 * 86400))
            chunk.append(Attempt(f"k{i}", f"s{i % 200}", rng.choice(TOOLS), model, u, cost, cost * 4, tier=tier, ts=ts))
            if len(chunk) == 5000:
                await record_many(led, chunk)
                chunk = []
        if chunk:
            await record_many(led, chunk)
        await record_policy(led, "s0", "default", BudgetLimits.from_usd(session="2", daily="20", monthly="300"))
    finally:
        await led.close()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def static_page(weight: int, summary: dict[str, Any]) -> str:
    """The same headline figures as a plain table, padded to `weight` bytes."""
    rows = "".join(
        f"<tr><td>{k}</td><td>{v['usd']}</td></tr>" for k, v in summary["totals"].items() if isinstance(v, dict)
    )
    head = f"<!doctype html><html><body data-ready='1'><table>{rows}</table><!--"
    tail = "--></body></html>"
    return head + "x" * max(0, weight - len(head) - len(tail)) + tail


def load_times(url: str, selector: str, reps: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for _ in range(reps + 1):  # the first load warms the browser and the server's caches
                page = browser.new_page(viewport={"width": 1366, "height": 900})
                t0 = time.perf_counter()
                page.goto(url)
                page.wait_for_selector(selector, timeout=120_000)
                out.append(time.perf_counter() - t0)
                page.close()
        finally:
            browser.close()
    return out[1:]


def run(quick: bool = False) -> list[Row]:
    n = 10_000 if quick else 100_000
    reps = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ledger.db"
        t0 = time.perf_counter()
        asyncio.run(fill(db, n))
        filled = time.perf_counter() - t0
        settings = Settings.from_env({"HOME": tmp, "OFFLOAD_DB": str(db)})
        with serving(build_app(settings, transcripts=Path(tmp) / "none")) as url, httpx2.Client(timeout=120) as http:
            page = http.get(url + "/").content
            docs, api = {}, {}
            for name in ("summary", "series", "sessions"):
                t = time.perf_counter()
                resp = http.get(f"{url}/api/{name}?since=30d")
                api[name] = time.perf_counter() - t
                docs[name] = resp
            weight = len(page) + sum(len(r.content) for r in docs.values())
            ours = load_times(url + "/", "body[data-ready='1'] #chart-time svg rect.bar", reps)
        static = static_page(weight, docs["summary"].json())
        app = Starlette(routes=[Route("/", lambda _: HTMLResponse(static))])
        with serving(app) as base_url:
            base = load_times(base_url + "/", "body[data-ready='1'] table", reps)
    med, base_med = statistics.median(ours), statistics.median(base)
    note = f"{n:,} ledger rows (written in {filled:.1f} s), n={reps}, Chromium 1366x900"
    return [
        Row(
            "dashboard",
            "page weight (HTML + 3 JSON)",
            f"{weight / 1024:.1f} KiB",
            f"page alone {len(page) / 1024:.1f} KiB",
            ratio(weight, len(page)),
            "uncompressed; JSON is aggregates, independent of row count past the buckets",
        ),
        Row(
            "dashboard",
            "time to first render (charts drawn)",
            ms(med),
            f"static page of the same weight {ms(base_med)}",
            ratio(med, base_med),
            note,
        ),
        *(Row("dashboard", f"/api/{k} server time", ms(v), "", "", f"{n:,} rows, one request") for k, v in api.items()),
    ]


if __name__ == "__main__":
    from common import table

    print(table(run(quick="--quick" in sys.argv)))
