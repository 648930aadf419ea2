"""`offload dashboard` in headless Chromium, on a ledger filled through real tool calls.

Real MCP client (in-memory) -> server -> real SDK over HTTP -> emulator -> SQLite; then the real
`offload dashboard` process, driven by Playwright on Debian's chromium (no browser download).
The totals the page shows must equal `offload spend --json`; a screenshot is kept as an artifact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from playwright.sync_api import sync_playwright

from helpers import query
from offload.config.settings import Settings
from offload.mcp.server import build_server
from transcript_fixtures import assistant, write_transcript

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SESSION = "dash-session-1"
SCRIPT = [
    {"model": "claude-haiku-5-5", "match": "ESCALATE", "reply": "no figures at all"},
    {"model": "claude-sonnet-5-5", "match": "ESCALATE", "reply": "the answer is 42"},
]
# The host's own turn in the same session: claude-sonnet-4-6 at $3 in, $3.75 5m write, $0.30 read,
# $15 out per MTok -> 1,000*3 + 20,000*3.75 + 100,000*0.30 + 800*15 = 120,000 millionths = $0.12.
HOST_USD = Decimal("0.12")


async def _fill(settings: Settings, root: Path) -> list[dict[str, Any]]:
    doc = "\n".join(f"def f{i}(x): return x * {i}  # helper {i}" for i in range(500))
    (root / "doc.py").write_text(doc, encoding="utf-8")
    async with Client(build_server(settings)) as c:

        async def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
            res = await c.call_tool(name, args)
            assert not res.is_error, res
            assert isinstance(res.structured_content, dict)
            return res.structured_content

        await call("routed_complete", {"prompt": "what does f7 do?", "context_files": ["doc.py"]})
        await call("routed_complete", {"prompt": "and f9?", "context_files": ["doc.py"]})
        await call("routed_complete", {"prompt": "ESCALATE: give a number", "must_match": "[0-9]"})
        await call("routed_complete", {"prompt": "Plan a migration.", "difficulty": "hard", "max_tokens": 64})
        log = "\n".join(f"2026-11-29 10:00:{i % 60:02d} INFO job {i} ok" for i in range(2000))
        trims = [await call("trim_result", {"content": log, "max_tokens": 200})]
        sub = await call("batch_submit", {"template": "Label: {item}", "items": ["a", "b", "c"], "max_tokens": 16})
        with anyio.fail_after(30):
            while (await call("batch_status", {"batch_id": sub["batch_id"]}))["state"] != "done":
                await anyio.sleep(0.2)
    return trims


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OFFLOAD_", "ANTHROPIC_", "CLAUDE_"))}


@contextmanager
def dashboard(*args: str) -> Iterator[str]:
    with subprocess.Popen(
        [sys.executable, "-m", "offload.cli.main", "dashboard", "--port", "0", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("offload dashboard on http://127.0.0.1:"), first + proc.stdout.read()
            yield first.split()[3]
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_dashboard_in_chromium_matches_offload_spend(
    tmp_path: Path, running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    db = tmp_path / "ledger.db"
    with running(script=SCRIPT) as emu:
        trims = anyio.run(_fill, make_settings(emu.url, session_id=SESSION), tmp_path)
    # What the trim kept out of the host's context is in the ledger, as the tool reported it.
    kept = query(db, "SELECT session_id, tool, tokens_in, tokens_out FROM context_kept_out")
    assert [tuple(r) for r in kept] == [(SESSION, "trim_result", trims[0]["tokens_in"], trims[0]["tokens_out"])]
    kept_out = trims[0]["tokens_in"] - trims[0]["tokens_out"]
    assert kept_out > 1000
    claude = tmp_path / "claude-projects"
    usage = {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 20000,
        "cache_read_input_tokens": 100000,
        "output_tokens": 800,
    }
    write_transcript(
        claude / "-work-proj" / f"{SESSION}.jsonl",
        [assistant(SESSION, "msg_1", "req_1", "claude-sonnet-4-6", usage, ts="2026-11-29T10:00:00Z")] * 3,
    )

    spend = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "spend", "--json", "--db", str(db)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    total = json.loads(spend.stdout)["total"]
    assert Decimal(total["cost_usd"]) > 0

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    with dashboard("--db", str(db), "--transcripts", str(claude)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=20_000)
            # Real charts: SVG bars, the burn-down lines and the limits drawn.
            assert page.locator("#chart-time svg rect.bar").count() >= 1
            assert page.locator("#chart-by svg rect.bar").count() >= 3  # haiku, sonnet, opus
            assert page.locator("#chart-savings svg rect.bar").count() == 4
            assert page.locator("#chart-budgets svg polyline.burn").count() == 3
            assert page.locator("#chart-budgets svg line.limit").count() == 3
            assert page.locator("#chart-sessions svg rect.bar").count() == 2
            # Totals equal `offload spend --json`: exactly in the table, to the cent on the card.
            assert page.locator("#totals-table td[data-k='cost']").inner_text() == total["cost_usd"]
            assert page.locator("#totals-table td[data-k='baseline']").inner_text() == total["baseline_usd"]
            assert page.locator("#totals-table td[data-k='calls']").inner_text() == str(total["calls"])
            card = page.locator("#total-cost").inner_text()
            assert Decimal(card.lstrip("$").replace(",", "")).quantize(Decimal("0.01")) == Decimal(
                total["cost_usd"]
            ).quantize(Decimal("0.01"))
            by_model = page.locator("#by-table tr").all_inner_texts()[1:]
            assert sum(Decimal(r.split("\t")[-1]) for r in by_model) == Decimal(total["cost_usd"])
            # The host's own bill, deduplicated (three copies of one response) and priced by hand.
            assert page.locator("#host-cost").inner_text() == f"${HOST_USD:.4f}"
            row = page.locator("#sessions-table tr", has_text=SESSION).inner_text().split("\t")
            assert row[5:9] == [f"{kept_out:,}", "1", f"${HOST_USD:.4f}", "0"]
            assert Decimal(row[3].lstrip("$")).quantize(Decimal("0.01")) == Decimal(total["cost_usd"]).quantize(
                Decimal("0.01")
            )
            open_batches = page.locator("#batches-table tr").all_inner_texts()[1:]
            assert len(open_batches) == 1 and "\tdone\t" in open_batches[0] and "3/3" in open_batches[0]
            page.screenshot(path=str(shot), full_page=True)
            # Another breakdown is fetched and drawn when chosen.
            page.select_option("#by", "tier")
            page.wait_for_function("document.getElementById('by-name2').textContent === 'tier'")
            tiers = [r.split("\t")[0] for r in page.locator("#by-table tr").all_inner_texts()[1:]]
            assert sorted(tiers) == ["cheap", "premium", "standard"]
            assert page.locator("#chart-by svg rect.bar").count() == 3
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")


@pytest.fixture(autouse=True)
def _chromium_present() -> None:
    assert Path(CHROMIUM).exists(), "install Debian's chromium (apt-get install -y chromium); .ci/run does"
