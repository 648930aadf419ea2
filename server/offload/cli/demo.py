"""`offload demo`: the whole product rehearsed on the emulator and a throw-away ledger.

No key and no network: the local Claude API emulator answers, scripted so that one call
escalates, and a temporary SQLite file records every priced attempt. It prints what each tool
did and what it cost, then the savings against the policy's baseline model.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from offload.config.settings import Settings, shipped
from offload.core.money import fmt_usd, usd_to_pusd
from offload.mcp.server import build_server
from offload.metering.metered import short_model
from offload_emulator import EmulatorConfig, serve_in_thread

# The cheap tier "forgets" the JSON format for the invoice; the standard tier gets it right.
SCRIPT: list[dict[str, Any]] = [
    {"model": "claude-haiku-5-5", "match": "invoice", "reply": "The invoice total is 1,280.00 EUR."},
    {"model": "claude-sonnet-5-5", "match": "invoice", "reply": '{"total": 1280.0, "currency": "EUR"}'},
    {"match": "Which function", "reply": "`retry_with_backoff` in net.py handles retries."},
    {"match": "Summarize", "reply": "Checkout p99 rose to 870 ms after deploy; rollback decided."},
]


def _files(root: Path) -> None:
    for i in range(4):
        body = "".join(f"def handler_{i}_{n}(request):\n    return route(request, shard={n})\n\n" for n in range(150))
        (root / f"svc{i}.py").write_text(body)
    (root / "net.py").write_text("def retry_with_backoff(fn, tries=5):\n    ...\n" * 40)
    log = [f"2026-11-23T10:{i // 60:02d}:{i % 60:02d} INFO test_case_{i} PASSED" for i in range(5000)]
    log.insert(
        3120,
        "2026-11-23T10:52:00 ERROR tests/test_checkout.py::test_refund FAILED\n"
        "E   AssertionError: expected refund 40.00, got 0.00",
    )
    log.append("===== 1 failed, 4999 passed in 312.4s =====")
    (root / "ci.log").write_text("\n".join(log) + "\n")
    notes = [
        f"Incident note {n}: checkout latency p99 870 ms at 14:{n:02d}; see https://status.example.com/inc/{n}"
        for n in range(60)
    ]
    notes.append("Decision: we roll back release 2026.11.3; do not re-enable the new cache until Monday.")
    (root / "incident.md").write_text("\n\n".join(notes))


def _text(result: Any) -> str:
    return "".join(getattr(b, "text", "") for b in result.content)


async def _rehearse(settings: Settings, out: Callable[[str], None]) -> int:
    steps: list[tuple[str, str, dict[str, Any], Callable[[Any], str]]] = [
        (
            "routed_complete",
            "classify a support ticket (task=classify)",
            {"prompt": "Classify: 'my card was charged twice' -> billing|bug|other", "task": "classify"},
            lambda r: f"{r.structured_content['tier']} by {r.structured_content['rule']}",
        ),
        (
            "routed_complete",
            "extract an invoice total (task=extract) with a JSON Schema check",
            {
                "prompt": "From this invoice, give the total: ... TOTAL DUE 1,280.00 EUR",
                "task": "extract",
                "response_schema": {"type": "object", "required": ["total", "currency"]},
            },
            lambda r: " → ".join(
                f"{a['model'].removeprefix('claude-')} {a['outcome']}" for a in r.structured_content["attempts"]
            ),
        ),
        (
            "routed_complete",
            "ask about 5 files the server reads (cache write)",
            {"prompt": "Which function handles retries?", "context_files": ["*.py"]},
            lambda r: f"cache write {r.structured_content['usage']['cache_write_tokens']:,} tokens",
        ),
        (
            "routed_complete",
            "ask again about the same files (cache read)",
            {"prompt": "Which function handles retries? Answer in one line.", "context_files": ["*.py"]},
            lambda r: f"cache read {r.structured_content['usage']['cache_read_tokens']:,} tokens",
        ),
        (
            "trim_result",
            "triage a 5,000-line CI log, locally",
            {"path": "ci.log", "max_tokens": 200},
            lambda r: f"{r.structured_content['tokens_in']:,} → {r.structured_content['tokens_out']:,} tokens",
        ),
        (
            "summarize_context",
            "summarize incident notes on the cheap tier",
            {"paths": ["incident.md"], "target_tokens": 120, "keep": ["2026.11.3"]},
            lambda r: (
                f"{r.structured_content['tokens_in']:,} → {r.structured_content['tokens_out']:,} tokens "
                f"in {r.structured_content['calls']} call(s), {len(r.structured_content['kept_verbatim'])} "
                "identifiers restored verbatim"
            ),
        ),
        (
            "batch_submit",
            "queue 20 items at the 50% batch rate",
            {"template": "Tag this product name with a category: {item}", "items": [f"item {n}" for n in range(20)]},
            lambda r: (
                f"{r.structured_content['requests']} requests on {short_model(r.structured_content['model'])}, "
                f"~{_usd(r.structured_content['sync_cost_usd'])} one by one"
            ),
        ),
    ]
    failures = 0
    async with Client(build_server(settings)) as client:
        for n, (tool, what, args, describe) in enumerate(steps, 1):
            result = await client.call_tool(tool, args)
            if result.is_error:
                failures += 1
                out(f"{n}. {tool:<17} {what}\n   ERROR: {_text(result)}")
                continue
            data = result.structured_content or {}
            if "estimated_cost_usd" in data:  # a batch is paid as its requests settle, not when queued
                cost = f"estimate {_usd(data['estimated_cost_usd'])}"
            elif data.get("cost_usd", "0") == "0":
                cost = "free: no API call"
            else:
                cost = f"cost {_usd(data['cost_usd'])}"
            out(f"{n}. {tool:<17} {what}\n   {describe(result)}   [{cost}]")
            if "batch_id" in data:
                out(f"   batch: {await _wait_for_batch(client, data['batch_id'])}")
        status = await client.call_tool("budget_status", {})
        out("\nbudget_status:\n  " + _text(status).replace("\n", "\n  "))
    return failures


async def _wait_for_batch(client: Any, batch_id: str, timeout_s: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await client.call_tool("batch_status", {"batch_id": batch_id})
        data = result.structured_content or {}
        if result.is_error:
            return f"ERROR: {_text(result)}"
        if data.get("state") == "done":
            settled = ", ".join(f"{n} {kind}" for kind, n in sorted(data["counts"].items()))
            return f"{settled} at batch rates, cost {_usd(data['cost_usd'])}"
        await anyio.sleep(0.25)
    return "still running (the demo does not wait longer)"


def _usd(exact: str) -> str:
    """An exact cost string from structuredContent, shown as the tools show money."""
    return fmt_usd(usd_to_pusd(exact))


def run_demo(*, keep: bool = False, out: Callable[[str], None] = print) -> int:
    # The rehearsal's own HTTP and server chatter would bury the story it tells.
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("httpx2", "httpx", "mcp", "uvicorn", "offload"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="offload-demo-"))
    try:
        _files(workdir)
        with serve_in_thread(EmulatorConfig(seed=7, script=SCRIPT, batch_delay_s=1.0)) as emu:
            settings = Settings(
                policy_path=shipped("default.yaml"),
                db_path=workdir / "ledger.db",
                session_id="demo",
                roots=(workdir,),
                api_key="demo-key-not-a-real-key",
                base_url=emu.url,
            )
            out("offload demo: a rehearsal on the local Claude API emulator (no key, no network)")
            out(f"policy {settings.policy_path.name}, ledger {settings.db_path}\n")
            failures = anyio.run(_rehearse, settings, out)
        if keep:
            out(f"\nkept: {workdir} (try: OFFLOAD_DB={settings.db_path} offload spend --by model)")
        out("\ndemo finished: every step ran" if not failures else f"\ndemo finished with {failures} failed step(s)")
        return 1 if failures else 0
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
