"""`/metrics` on `offload serve --http`: scraped over real HTTP after real tool calls.

The real server under uvicorn, the real mcp client over streamable HTTP, the real SDK to the
emulator, a real SQLite ledger; the exposition is checked against the ledger read with sqlite3.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from helpers import query, uvicorn_serving
from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.pricing import Usage
from offload.infra.ledger.dashboard import Group
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record
from offload.mcp.http import build_http_app
from offload.mcp.metrics import render

TOKEN = "tok-metrics-5e2a9c1d7b3f"
SECRET_PROMPT = "PROMPT-TEXT-NEVER-EXPORTED"
SCRIPT = [
    {"model": "claude-haiku-5-5", "match": "ESCALATE", "reply": "no figures at all"},
    {"model": "claude-sonnet-5-5", "match": "ESCALATE", "reply": "the answer is 42"},
    {"match": "REFUSE", "reply": "I can't help with that.", "stop_reason": "refusal"},
]
# pusd per token, written out by hand from DESIGN.md §5 (in, 5m write, 1h write, read)
HAND = {
    "claude-haiku-5-5": (100_000, 125_000, 200_000, 10_000),
    "claude-sonnet-5-5": (2_000_000, 2_500_000, 4_000_000, 100_000),
}
SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")


def _settings(tmp_path: Path, base_url: str, *tokens: str) -> Settings:
    env = {
        "HOME": str(tmp_path),
        "OFFLOAD_DB": str(tmp_path / "ledger.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
        "OFFLOAD_SESSION": "m",
        "OFFLOAD_HTTP_TOKENS": ",".join(tokens),
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": base_url,
    }
    return Settings.from_env(env)


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], str]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], str]] = defaultdict(dict)
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = tuple(tuple(kv.split("=", 1)) for kv in m.group(2).split(","))
        out[m.group(1)][tuple((k, v.strip('"')) for k, v in labels)] = m.group(3)
    return out


async def _calls(url: str, root: Path) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as c,
    ):
        doc = "\n".join(f"def f{i}(x): return x * {i}  # helper number {i}" for i in range(400))
        (root / "doc.py").write_text(doc, encoding="utf-8")
        for args in (
            {"prompt": f"{SECRET_PROMPT} what does f7 do?", "context_files": ["doc.py"]},
            # A new prefix is not cached; its second use writes it (5m) and the third reads it.
            {"prompt": "and f9?", "context_files": ["doc.py"]},
            {"prompt": "and f11?", "context_files": ["doc.py"]},
            {"prompt": "ESCALATE: give a number", "must_match": "[0-9]", "difficulty": "easy"},
            {"prompt": "REFUSE this", "difficulty": "hard"},
        ):
            res = await c.call_tool("routed_complete", args)
            assert not res.is_error, res


def test_metrics_scrape_equals_the_ledger(tmp_path: Path, running: Any) -> None:
    db = tmp_path / "ledger.db"
    with running(script=SCRIPT) as emu, uvicorn_serving(build_http_app(_settings(tmp_path, emu.url, TOKEN))) as url:
        anyio.run(_calls, url, tmp_path)
        with httpx2.Client() as http:
            refused = http.get(f"{url}/metrics")
            wrong = http.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"})
            resp = http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 401 and wrong.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert SECRET_PROMPT not in resp.text and TOKEN not in resp.text and "test-key" not in resp.text
    got = parse(resp.text)

    rows = query(db, "SELECT * FROM attempts")
    assert len(rows) >= 6  # three context calls, two escalation rungs, the refusal (+ any triage)
    # The cost counter equals the ledger total, to the picodollar.
    total = sum(Decimal(v) for v in got["offload_cost_usd_total"].values())
    assert total * 10**12 == sum(r["cost_pusd"] for r in rows) > 0
    assert sum(Decimal(v) for v in got["offload_baseline_usd_total"].values()) * 10**12 == sum(
        r["baseline_pusd"] for r in rows
    )
    assert sum(int(v) for v in got["offload_calls_total"].values()) == len(rows)
    # Per label set, too.
    per: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in rows:
        per[(r["model"], r["tier"], r["tool"])] += r["cost_pusd"]
    for labels, value in got["offload_cost_usd_total"].items():
        d = dict(labels)
        assert Decimal(value) * 10**12 == per[(d["model"], d["tier"], d["tool"])]
    assert set(dict(lb)["tool"] for lb in got["offload_cost_usd_total"]) == {"routed_complete"}

    for kind, col in (("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read"),
                      ("cache_write_5m", "cache_write_5m"), ("cache_write_1h", "cache_write_1h")):  # fmt: skip
        exported = sum(int(v) for lb, v in got["offload_tokens_total"].items() if dict(lb)["kind"] == kind)
        assert exported == sum(r[col] for r in rows), kind
    assert sum(r["cache_read"] for r in rows) > 0 and sum(r["cache_write_5m"] for r in rows) > 0

    esc = {dict(lb)["model"]: int(v) for lb, v in got["offload_escalations_total"].items() if int(v)}
    assert esc == {"claude-haiku-5-5": 1}
    refusals = sum(int(v) for v in got["offload_refusals_total"].values())
    assert refusals == sum(r["stop_reason"] == "refusal" for r in rows) == 1
    # Answers by what became of them, equal to the ledger's calls table (every answer counted once).
    calls = query(db, "SELECT checked, verdict FROM calls")
    states = {dict(lb)["state"]: int(v) for lb, v in got["offload_answers_total"].items()}
    assert sum(states.values()) == len(calls) > 0
    assert states["checked"] == sum(bool(c["checked"]) and c["verdict"] is None for c in calls)
    assert states["redone"] == sum(c["verdict"] is not None for c in calls)

    # Cache net gain, priced by hand per row: reads saved (input - read) minus write premiums.
    hand = sum(
        r["cache_read"] * (HAND[r["model"]][0] - HAND[r["model"]][3])
        - r["cache_write_5m"] * (HAND[r["model"]][1] - HAND[r["model"]][0])
        - r["cache_write_1h"] * (HAND[r["model"]][2] - HAND[r["model"]][0])
        for r in rows
        if r["model"] in HAND
    )
    assert all(r["model"] in HAND or r["cache_read"] + r["cache_write_5m"] == 0 for r in rows)
    assert sum(Decimal(v) for v in got["offload_cache_net_gain_usd"].values()) * 10**12 == hand


def test_metrics_before_any_call_lists_families_and_no_samples(tmp_path: Path) -> None:
    with uvicorn_serving(build_http_app(_settings(tmp_path, "http://127.0.0.1:9"))) as url, httpx2.Client() as http:
        resp = http.get(f"{url}/metrics")  # loopback without tokens: no token needed
        rebound = http.get(f"{url}/metrics", headers={"Host": "evil.example"})
    assert rebound.status_code == 421
    assert resp.status_code == 200
    assert "# TYPE offload_cost_usd_total counter" in resp.text
    assert "# TYPE offload_cache_net_gain_usd gauge" in resp.text
    assert not [ln for ln in resp.text.splitlines() if not ln.startswith("#")]


def test_label_values_are_escaped() -> None:
    g = Group('odd"model\\\n', "t", "x", False, False, 1, Usage(1, 1), 5, 5, 0, 0, 0)
    text = render([g], load_prices())
    assert 'offload_calls_total{model="odd\\"model\\\\\\n",tier="t",tool="x"} 1' in text


def test_metrics_on_loopback_without_tokens_refuses_rebound_host_names(tmp_path: Path) -> None:
    # A web page whose name was rebound to 127.0.0.1 reads the scrape as same-origin: spend by
    # model and tool is not for it. /mcp already answers it 421; /metrics must too.
    with uvicorn_serving(build_http_app(_settings(tmp_path, "http://127.0.0.1:9"))) as url, httpx2.Client() as http:
        rebound = http.get(f"{url}/metrics", headers={"Host": "evil.example:8765"})
        local = http.get(f"{url}/metrics", headers={"Host": "localhost:8765"})
    assert rebound.status_code == 421 and "loopback" in rebound.text
    assert local.status_code == 200


def _custom_prices(tmp_path: Path) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(
        'models:\n  claude-custom-1:\n    as_of: "2026-11-01"\n    input: "1"\n    cache_write_5m: "1.25"\n'
        '    cache_write_1h: "2"\n    cache_read: "0.10"\n    output: "5"\n    min_cacheable_tokens: 1024\n',
        encoding="utf-8",
    )
    return path


async def _custom_row(db: Path) -> None:
    led = await Ledger.open(db)
    try:
        await record(led, Attempt("c1", "m", "routed_complete", "claude-custom-1", Usage(10, 5, cache_read=1000), 1, 2))
    finally:
        await led.close()


def test_metrics_price_cache_gain_with_the_users_price_file(tmp_path: Path) -> None:
    anyio.run(_custom_row, tmp_path / "ledger.db")
    settings = replace(_settings(tmp_path, "http://127.0.0.1:9"), pricing_path=_custom_prices(tmp_path))
    with uvicorn_serving(build_http_app(settings)) as url, httpx2.Client() as http:
        got = parse(http.get(f"{url}/metrics").text)
    # 1000 reads at $1 - $0.10 per million saved, by the user's rates (the shipped table lacks the model).
    gain = {dict(lb)["model"]: v for lb, v in got["offload_cache_net_gain_usd"].items()}
    assert Decimal(gain["claude-custom-1"]) * 10**12 == 1000 * (1_000_000 - 100_000)
