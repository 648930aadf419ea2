"""Money audit: every dollar a tool reports is in the ledger, priced from the API's own usage.

A seeded random mix of real tool calls (real MCP client in-memory → server → real anthropic SDK
over HTTP → emulator → SQLite) is audited four ways, to the picodollar:

- the sum of every tool result's `cost_usd` (exact decimal strings)
  == SUM(cost_pusd) in the ledger == `offload spend --json` total == budget_status's cost;
- the ledger's rows carry exactly the usage the emulator reported (its request log for
  synchronous calls, the batch results fetched with the SDK for batch calls);
- every row's cost and baseline equal that usage priced with the rates written out below BY
  HAND (not offload's PriceTable);
- `offload statusline` shows today's total rounded as documented.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import anthropic
import anyio
import pytest
from mcp import Client

from offload.config.settings import Settings, shipped
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

# USD per million tokens as published (DESIGN.md §5), written out by hand; x10**6 = pusd/token.
HAND = {
    "claude-haiku-5-5": {"in": "0.10", "w5m": "0.125", "w1h": "0.20", "read": "0.01", "out": "0.50"},
    "claude-sonnet-5-5": {"in": "2", "w5m": "2.50", "w1h": "4", "read": "0.10", "out": "10"},
    "claude-opus-5-5": {"in": "4", "w5m": "5", "w1h": "8", "read": "0.20", "out": "20"},
}
BASELINE = "claude-opus-5-5"
BASELINE_MIN_CACHEABLE = 1024  # Opus 5.5 caches prefixes from 1,024 tokens


def rate(model: str, kind: str, *, batch: bool = False) -> Decimal:
    """pusd per token."""
    r = Decimal(HAND[model][kind]) * 10**6
    return r / 2 if batch else r


def hand_cost(model: str, u: dict[str, int], *, batch: bool) -> int:
    total = sum(
        (
            u[col] * rate(model, kind, batch=batch)
            for col, kind in (
                ("input_tokens", "in"),
                ("cache_write_5m", "w5m"),
                ("cache_write_1h", "w1h"),
                ("cache_read", "read"),
                ("output_tokens", "out"),
            )
        ),
        Decimal(0),
    )
    assert total == total.to_integral_value()
    return int(total)


def hand_baseline(u: dict[str, int]) -> int:
    """The same request on the baseline model with the same caching, at its sync rates."""
    cached = u["cache_write_5m"] + u["cache_write_1h"] + u["cache_read"]
    if 0 < cached < BASELINE_MIN_CACHEABLE:  # too short for the baseline's cache: plain input
        u = {**u, "input_tokens": u["input_tokens"] + cached, "cache_write_5m": 0, "cache_write_1h": 0, "cache_read": 0}
    return hand_cost(BASELINE, u, batch=False)


def usage_of_api(model: str, usage: Any) -> tuple[Any, ...]:
    """(model, input, output, w5m, w1h, read) from an API usage mapping or SDK object."""

    def get(obj: Any, name: str) -> int:
        v = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        return int(v or 0)

    cc = usage.get("cache_creation") if isinstance(usage, dict) else usage.cache_creation
    w1h = get(cc, "ephemeral_1h_input_tokens") if cc else 0
    w5m_total = get(usage, "cache_creation_input_tokens") - w1h
    return (
        model,
        get(usage, "input_tokens"),
        get(usage, "output_tokens"),
        w5m_total,
        w1h,
        get(usage, "cache_read_input_tokens"),
    )


def run_cli(*args: str, db: Path) -> str:
    env = {**os.environ, "OFFLOAD_DB": str(db)}
    out = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", *args, "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def policy_file(tmp_path: Path, ttl: str) -> Path:
    text = shipped("default.yaml").read_text(encoding="utf-8")
    # Caching on every cacheable prefix: the audit prices writes and reads of both TTLs by hand.
    text = text.replace("  ttl: 5m\n", f"  placement: always\n  ttl: {ttl}\n")
    text = text.replace("  session_usd: 2\n", "  session_usd: 200\n").replace("daily_usd: 20", "daily_usd: 2000")
    text = text.replace("monthly_usd: 300", "monthly_usd: 30000")
    assert f"ttl: {ttl}" in text
    path = tmp_path / f"policy-{ttl}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


SCRIPT = [
    # escalation: the cheap tier's answer fails must_match, the standard tier's passes
    {"model": "claude-haiku-5-5", "match": "ESCALATE", "reply": "no figures at all"},
    {"model": "claude-sonnet-5-5", "match": "ESCALATE", "reply": "the answer is 42"},
    # trim_result's model fallback: only one part holds the answer
    {"match": "zone=mars-1", "reply": "Zone: mars-1"},
    {"match": "Extract what answers", "reply": "NONE"},
]


def make_docs(tmp_path: Path, rng: random.Random) -> list[str]:
    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "zeta"]
    names = []
    for i in range(3):
        body = "\n".join(
            f"def handler_{i}_{j}(x):  # {' '.join(rng.choice(words) for _ in range(8))}\n    return x * {j}"
            for j in range(300)
        )
        name = f"mod{i}.py"
        (tmp_path / name).write_text(body, encoding="utf-8")
        names.append(name)
    return names


def build_log(rng: random.Random) -> str:
    lines = [f"2026-01-01 10:{i // 60 % 60:02d}:{i % 60:02d} INFO job {i} ok" for i in range(3000)]
    lines.insert(rng.randint(100, 2900), "2026-01-01 10:41:40 INFO deploy zone=mars-1")
    return "\n".join(lines) + "\n"


async def drive(c: Client, rng: random.Random, docs: list[str], tmp_path: Path) -> list[str]:
    """A seeded mix of real tool calls; returns every tool result's cost_usd string."""
    costs: list[str] = []

    async def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
        res = await c.call_tool(name, args)
        assert not res.is_error, (name, args, res)
        data = res.structured_content
        assert isinstance(data, dict)
        return data

    def routed() -> dict[str, Any]:
        kind = rng.choice(["plain", "context", "context", "escalate", "hard", "medium"])
        args: dict[str, Any] = {"prompt": f"Question {rng.randint(0, 999)}: what does the code do?"}
        if kind == "context":
            args["context_files"] = rng.sample(docs, rng.randint(1, 2))
            args["prompt"] = "Which handler multiplies by 7?"
        elif kind == "escalate":
            args["prompt"] = "ESCALATE: give a number"
            args["must_match"] = "[0-9]"
            args["task"] = "extract"  # a task rule starts it on the cheap tier
        elif kind in ("hard", "medium"):
            args["difficulty"] = kind
            args["max_tokens"] = rng.randint(16, 200)
        if rng.random() < 0.3:
            args["system"] = "Answer tersely."
        return args

    steps = ["routed"] * 9 + ["summarize", "trim_query", "trim_free"]
    rng.shuffle(steps)
    batch_ids: list[str] = []
    for step in ["batch", *steps]:
        if step == "routed":
            costs.append((await call("routed_complete", routed()))["cost_usd"])
        elif step == "summarize":
            paths = rng.sample(docs, 2)
            costs.append((await call("summarize_context", {"paths": paths, "target_tokens": 200}))["cost_usd"])
        elif step == "trim_query":
            data = await call(
                "trim_result",
                {"content": build_log(rng), "query": "which datacenter hosts production", "max_tokens": 200},
            )
            assert data["query_answered"] is False and data["cost_usd"] != "0"
            costs.append(data["cost_usd"])
        elif step == "trim_free":
            costs.append((await call("trim_result", {"content": build_log(rng), "max_tokens": 200}))["cost_usd"])
        else:
            items = [f"ticket {i}: refund #{rng.randint(1, 99)}" for i in range(rng.randint(3, 8))]
            sub = await call("batch_submit", {"template": "Label: {item}", "items": items, "max_tokens": 32})
            batch_ids.append(sub["batch_id"])
    with anyio.fail_after(30):
        for bid in batch_ids:
            while (data := await call("batch_status", {"batch_id": bid}))["state"] != "done":
                await anyio.sleep(0.2)
            costs.append(data["cost_usd"])
    return costs


@pytest.mark.parametrize("ttl", ["5m", "1h"])
async def test_every_reported_dollar_is_in_the_ledger_priced_by_hand(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path, ttl: str
) -> None:
    rng = random.Random(f"audit-{ttl}")
    docs = make_docs(tmp_path, rng)
    with running(script=SCRIPT, batch_delay_s=0.2) as emu:
        settings = make_settings(emu.url, policy_path=policy_file(tmp_path, ttl))
        async with Client(build_server(settings)) as c:
            costs = await drive(c, rng, docs, tmp_path)
            status = await c.call_tool("budget_status", {"scope": "session"})
            assert not status.is_error
            status_data = status.structured_content
            assert isinstance(status_data, dict)
        sync_calls = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
        api = anthropic.Anthropic(base_url=emu.url, api_key="test-key")
        batch_usages = [
            usage_of_api(line.result.message.model, line.result.message.usage)
            for b in api.messages.batches.list()
            for line in api.messages.batches.results(b.id)
            if line.result.type == "succeeded"
        ]
        api.close()

    db = settings.db_path
    import sqlite3

    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM attempts ORDER BY id").fetchall()
    conn.close()

    # 1. the four totals agree to the picodollar
    tool_total = sum(Decimal(x) for x in costs)
    ledger_total = sum(int(r["cost_pusd"]) for r in rows)
    spend = json.loads(run_cli("spend", "--json", "--by", "model", db=db))
    assert tool_total * 10**12 == ledger_total, (tool_total, ledger_total)
    assert Decimal(spend["total"]["cost_usd"]) * 10**12 == ledger_total
    assert Decimal(status_data["cost_usd"]) * 10**12 == ledger_total
    assert status_data["calls"] == len(rows) == spend["total"]["calls"]

    # 2. the ledger holds exactly the usage the API reported, no more, no less
    def row_usage(r: Any) -> tuple[Any, ...]:
        cols = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read")
        return (r["model"], *(int(r[c]) for c in cols))

    sync_rows = [r for r in rows if not r["batch"]]
    batch_rows = [r for r in rows if r["batch"] and r["outcome"] == "ok"]
    assert Counter(row_usage(r) for r in sync_rows) == Counter(usage_of_api(str(r.model), r.usage) for r in sync_calls)
    assert Counter(row_usage(r) for r in batch_rows) == Counter(batch_usages)
    assert len(sync_rows) + len(batch_rows) == len(rows)

    # the mix really covered what it is meant to
    assert any(r["cache_write_5m" if ttl == "5m" else "cache_write_1h"] for r in sync_rows)
    assert any(r["cache_read"] for r in sync_rows)
    assert {"routed_complete", "summarize_context", "trim_result", "batch_submit"} <= {r["tool"] for r in rows}
    assert any(r["outcome"] == "escalated" for r in rows)
    assert len({r["model"] for r in rows}) == 3

    # 3. every row priced by hand; baseline only for the answer the host used
    for r in rows:
        u = {k: int(r[k]) for k in ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read")}
        assert int(r["cost_pusd"]) == hand_cost(r["model"], u, batch=bool(r["batch"])), dict(r)
        counts = r["outcome"] not in ("escalated", "triage")
        assert int(r["baseline_pusd"]) == (hand_baseline(u) if counts else 0), dict(r)

    # 4. the statusline rounds today's total as money.fmt_usd does: 4 places under $1, half to even
    line = run_cli("statusline", db=db).strip()
    usd = Decimal(ledger_total) / 10**12
    shown = usd.quantize(Decimal("0.0001") if usd < 1 else Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    assert line.startswith(f"offload ${shown} today"), (line, usd)
