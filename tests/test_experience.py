"""What users and the host model read: outputs are short, true and say what to do next.

Each test reads an output the way its reader would (a model through the real MCP client, a
person through the CLI) and pins one property: a nonzero cost never prints as zero, a page of
nothing is one line, labels are unambiguous, a broken file is an error message, not a traceback.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from offload.config.settings import Settings
from offload.core.money import fmt_usd
from offload.mcp.server import build_server

POLICIES = Path(__file__).resolve().parent.parent / "policies"
OFFLOAD = str(Path(sys.executable).with_name("offload"))
ZERO_SHOWN = re.compile(r"\$0\.0+(?!\d*[1-9])")  # "$0.0000": a cost printed as nothing


def text_of(result: Any) -> str:
    return "".join(getattr(b, "text", "") for b in result.content)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OFFLOAD, *args], capture_output=True, text=True, timeout=120, check=False, env=env)


# --- money as text ---------------------------------------------------------------------------


def test_fmt_usd_never_prints_a_nonzero_amount_as_zero() -> None:
    # A Haiku 5.5 classify call costs about $0.00002: "$0.0000" would read as free.
    assert fmt_usd(22_800_000) == "$0.000023"  # $0.0000228
    assert fmt_usd(-22_800_000) == "-$0.000023"
    assert fmt_usd(1) != "$0.0000" and fmt_usd(1).startswith("<$")  # one picodollar
    assert fmt_usd(100_000_000) == "$0.0001"  # from a ten-thousandth up: unchanged
    assert fmt_usd(1_234_500_000_000) == "$1.23"
    assert fmt_usd(0) == "$0.0000"


@pytest.mark.anyio
async def test_small_costs_are_visible_in_footer_and_budget_status(
    emulator: Any, make_settings: Callable[..., Settings]
) -> None:
    async with Client(build_server(make_settings(emulator.url))) as c:
        done = await c.call_tool("routed_complete", {"prompt": "Classify: refund -> billing|bug", "task": "classify"})
        status = await c.call_tool("budget_status", {"scope": "session"})
    assert done.structured_content is not None and done.structured_content["cost_usd"] != "0"
    footer = text_of(done).splitlines()[-1]
    assert not ZERO_SHOWN.search(footer), footer
    first = text_of(status).splitlines()[0]
    assert not ZERO_SHOWN.search(first.split(" of ")[0]), first


# --- budget_status ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_budget_status_lines_are_unambiguous_and_short(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(batch_delay_s=3600) as emu:
        async with Client(build_server(make_settings(emu.url))) as c:
            fresh = text_of(await c.call_tool("budget_status", {}))
            await c.call_tool("routed_complete", {"prompt": "Classify: refund -> billing|bug", "task": "classify"})
            await c.call_tool("batch_submit", {"template": "Tag: {item}", "items": ["a", "b", "c"]})
            busy = await c.call_tool("budget_status", {})
    # Nothing has run yet: no "saved $0.0000 (0%)" noise.
    assert "saved" not in fresh and "no calls yet" in fresh, fresh
    text = text_of(busy)
    labels = [line.split(":", 1)[0] for line in text.splitlines()]
    assert len(labels) == len(set(labels)), f"two lines share a label: {text}"
    # The pending batch's hold is a reservation (as structuredContent and budget errors call it).
    assert busy.structured_content is not None
    assert busy.structured_content["scopes"]["session"]["reserved_usd"] != "0"
    assert "reserved" in text and "in flight" not in text, text
    assert len(text) < 600, text


# --- batch views -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_results_of_a_running_batch_do_not_list_every_pending_item(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(batch_delay_s=3600) as emu:
        async with Client(build_server(make_settings(emu.url))) as c:
            sub = await c.call_tool("batch_submit", {"template": "Tag: {item}", "items": [f"p{n}" for n in range(30)]})
            assert sub.structured_content is not None
            bid = sub.structured_content["batch_id"]
            page = await c.call_tool("batch_results", {"batch_id": bid})
    text = text_of(page)
    assert not page.is_error, text
    assert "(pending): pending" not in text, text
    assert len(text) < 300, text
    assert f"batch_status('{bid}')" in text  # what to call instead
    assert page.structured_content is not None and page.structured_content["pending"] == 20


def test_offload_batches_on_a_file_that_is_not_a_ledger_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    notdb = tmp_path / "policy.yaml"
    notdb.write_text("name: x\n" * 200)
    res = run("batches", "--db", str(notdb))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr, res.stderr
    assert str(notdb) in res.stderr and "--db" in res.stderr, res.stderr
    # And it did not turn the user's file into a database.
    assert notdb.read_text() == "name: x\n" * 200


def test_offload_batches_does_not_write_to_the_ledger(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE unrelated (x)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    res = run("batches", "--db", str(db))
    assert res.returncode == 1, res.stdout
    assert "not an offload ledger" in res.stderr, res.stderr
    assert db.read_bytes() == before


# --- policy CLI ------------------------------------------------------------------------------


def test_policy_check_on_the_shipped_directory_skips_the_price_table() -> None:
    res = run("policy", "check", *sorted(str(p) for p in POLICIES.glob("*.yaml")))
    assert res.returncode == 0, res.stderr
    assert "pricing.yaml" in res.stdout and "price table" in res.stdout, res.stdout
    assert "unknown key" not in res.stderr


def test_policy_explain_at_the_top_tier_says_there_is_nowhere_to_climb() -> None:
    res = run("policy", "explain", str(POLICIES / "default.yaml"), "prove it", "--difficulty", "hard")
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("escalation"))
    assert "(none) (on" not in line, line
    assert "premium" in line and "top" in line, line


# --- offload demo ----------------------------------------------------------------------------


def test_demo_lines_are_whole_and_the_batch_step_shows_its_estimate() -> None:
    from offload.cli.demo import run_demo

    lines: list[str] = []
    assert run_demo(out=lines.append) == 0, "\n".join(lines)
    out = "\n".join(lines)
    for line in out.splitlines():
        assert line.count("[") == line.count("]"), f"cut-off line: {line!r}"
    batch_step = out.split("batch_submit", 1)[1].split("\n")[1]
    assert "[cost $0]" not in batch_step and "estimate" in batch_step, batch_step
    assert re.search(r"batch: .*\$0\.\d", out), out  # what the settled batch actually cost


def test_offload_spend_on_a_file_that_is_not_a_ledger_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    notdb = tmp_path / "notes.txt"
    notdb.write_text("not a database\n" * 200)
    res = run("spend", "--db", str(notdb))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr, res.stderr
    assert str(notdb) in res.stderr, res.stderr


@pytest.mark.anyio
async def test_batch_status_of_many_open_batches_stays_near_300_tokens(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(batch_delay_s=3600) as emu:
        async with Client(build_server(make_settings(emu.url))) as c:
            for n in range(12):
                await c.call_tool("batch_submit", {"template": "Tag: {item}", "items": [f"b{n}", f"c{n}"]})
            listing = await c.call_tool("batch_status", {})
    text = text_of(listing)
    assert len(text) <= 1_200, f"{len(text)} chars: {text}"
    assert "+2 more" in text and "batch_status(batch_id=" in text, text
    assert listing.structured_content is not None and len(listing.structured_content["batches"]) == 10
