"""Host context: what offload costs the host per turn (tools/list) and saves it per task.

Token counts are chars/4 (offload.core.tokens.approx_tokens) on both sides of every ratio, plus the
emulator's count_tokens for tools/list. "Without" is the host reading the material itself;
"with" is the tool call's arguments plus the result the host actually receives.

    python bench/bench_context.py
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import anthropic
import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, ratio, table
from offload.config.settings import Settings, shipped
from offload.core.tokens import approx_tokens
from offload.mcp.server import build_server
from offload_emulator import EmulatorConfig, serve_in_thread

TOOLS_LIST_BUDGET = 1_200  # DESIGN.md §3


def _fixtures(root: Path) -> None:
    rng = random.Random(11)
    src = root / "src"
    src.mkdir()
    for i in range(20):
        body = "".join(
            f"def handler_{i}_{n}(request):\n    # validate, then route to shard {rng.randint(0, 63)}\n"
            f"    return dispatch(request, retries={rng.randint(1, 9)})\n\n"
            for n in range(40)
        )
        (src / f"module_{i:02}.py").write_text(body)
    lines = []
    for n in range(5000):
        if n in (1200, 3101, 4870):
            lines.append(f"2026-11-02T10:{n % 60:02}:00Z ERROR test_payments::test_refund_{n} failed: AssertionError")
        else:
            lines.append(f"2026-11-02T10:{n % 60:02}:00Z INFO step {n}: compiling crate_{n % 97} ... ok")
    (root / "ci.log").write_text("\n".join(lines) + "\n")
    records = [
        {
            "id": n,
            "customer": f"c{rng.randint(1, 999)}",
            "status": rng.choice(["ok", "late", "refunded"]),
            "amount_eur": rng.randint(5, 900),
            "note": "delivered to the front desk after two attempts",
        }
        for n in range(100)
    ]
    (root / "records.json").write_text(json.dumps(records, indent=1))


def _text(result: Any) -> str:
    return "".join(getattr(b, "text", "") for b in result.content)


async def measure() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread(EmulatorConfig(seed=2)) as emu:
        root = Path(tmp)
        _fixtures(root)
        settings = Settings(
            policy_path=shipped("default.yaml"),
            db_path=root / "ledger.db",
            session_id="bench-context",
            roots=(root,),
            api_key="bench-key",
            base_url=emu.url,
        )
        async with Client(build_server(settings)) as client:
            listed = await client.list_tools()
            wire = json.dumps(listed.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))
            sdk = anthropic.AsyncAnthropic(base_url=emu.url, api_key="bench-key")
            try:
                counted = await sdk.messages.count_tokens(
                    model="claude-opus-5-5", messages=[{"role": "user", "content": wire}]
                )
            finally:
                await sdk.close()
            rows.append(
                Row(
                    "context",
                    "tools/list tokens (chars/4)",
                    f"{approx_tokens(wire)} ({len(wire)} chars)",
                    f"design budget {TOOLS_LIST_BUDGET}",
                    ratio(approx_tokens(wire), TOOLS_LIST_BUDGET),
                    f"emulator count_tokens: {counted.input_tokens}; paid by the host every turn",
                )
            )

            files = sorted((root / "src").glob("*.py"))
            question = "Which handler routes to shard 7 with the most retries?"
            cases: list[tuple[str, str, str, dict[str, Any]]] = [
                (
                    "read 20 files, answer a question",
                    question + "\n" + "".join(p.read_text() for p in files),
                    "routed_complete",
                    {"prompt": question, "context_files": ["src/*.py"]},
                ),
                (
                    "triage a 5,000-line CI log",
                    (root / "ci.log").read_text(),
                    "trim_result",
                    {"path": "ci.log", "query": "error failed", "max_tokens": 300},
                ),
                (
                    "summarize 100 records",
                    (root / "records.json").read_text(),
                    "summarize_context",
                    {"paths": ["records.json"], "target_tokens": 300},
                ),
            ]
            for name, without, tool, args in cases:
                result = await client.call_tool(tool, args)
                if result.is_error:
                    rows.append(Row("context", f"host tokens: {name}", "error", "", "", _text(result)[:120]))
                    continue
                host_with = approx_tokens(json.dumps(args)) + approx_tokens(_text(result))
                host_without = approx_tokens(without)
                rows.append(
                    Row(
                        "context",
                        f"host tokens: {name}",
                        str(host_with),
                        f"host reads it all {host_without}",
                        ratio(host_with, host_without, 3),
                        f"via {tool}",
                    )
                )
    return rows


def run(quick: bool = False) -> list[Row]:
    result: list[Row] = anyio.run(measure)
    return result


if __name__ == "__main__":
    print(table(run()))
