"""OTLP export (`OFFLOAD_OTEL=1`, the `otel` extra): a real `offload serve` over stdio sends
its metrics to a real OTLP/HTTP receiver; the exported cost equals the ledger's total."""

from __future__ import annotations

import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from helpers import query, uvicorn_serving
from offload.config.otel import otel_enabled

VENV_BIN = Path(sys.executable).parent
SCRIPT = [
    {"model": "claude-haiku-5-5", "match": "ESCALATE", "reply": "no figures at all"},
    {"model": "claude-sonnet-5-5", "match": "ESCALATE", "reply": "the answer is 42"},
]


class Receiver:
    """An OTLP/HTTP metrics endpoint keeping the newest value of every (metric, attributes)."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self.resource: dict[str, str] = {}
        self.app = Starlette(routes=[Route("/v1/metrics", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        req = ExportMetricsServiceRequest.FromString(await request.body())
        for rm in req.resource_metrics:
            self.resource = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    points = m.sum.data_points if m.HasField("sum") else m.gauge.data_points
                    for p in points:
                        attrs = tuple(sorted((kv.key, kv.value.string_value) for kv in p.attributes))
                        value = p.as_double if p.HasField("as_double") else float(p.as_int)
                        self.latest.setdefault(m.name, {})[attrs] = value
        body = ExportMetricsServiceResponse().SerializeToString()
        return Response(body, media_type="application/x-protobuf")

    def total(self, name: str, **match: str) -> float:
        return sum(v for k, v in self.latest.get(name, {}).items() if match.items() <= dict(k).items())


async def _drive(params: StdioServerParameters, err: Any, receiver: Receiver, db: Path) -> tuple[int, float]:
    async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
        for args in (
            {"prompt": "What is 2+2?"},
            {"prompt": "ESCALATE: give a number", "must_match": "[0-9]", "difficulty": "easy"},
            {"prompt": "Plan a migration.", "difficulty": "hard", "max_tokens": 64},
        ):
            res = await c.call_tool("routed_complete", args)
            assert not res.is_error, res
        ledger = sum(r["cost_pusd"] for r in query(db, "SELECT cost_pusd FROM attempts"))
        deadline = time.monotonic() + 15
        # Periodic exports (every 200 ms here) catch up with the ledger while the session is open.
        while time.monotonic() < deadline:
            exported = receiver.total("offload.cost.usage")
            if abs(Decimal(exported) * 10**12 - ledger) < 10**12 * Decimal("1e-9"):
                break
            await anyio.sleep(0.1)
        return ledger, receiver.total("offload.cost.usage")


def test_otlp_export_matches_the_ledger(tmp_path: Path, running: Any) -> None:
    receiver = Receiver()
    db = tmp_path / "ledger.db"
    with running(script=SCRIPT) as emu, uvicorn_serving(receiver.app) as otlp:
        env = {
            "HOME": str(tmp_path),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "OFFLOAD_DB": str(db),
            "OFFLOAD_ROOTS": str(tmp_path),
            "OFFLOAD_SESSION": "otel-1",
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": emu.url,
            "OFFLOAD_OTEL": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        }
        params = StdioServerParameters(command=str(VENV_BIN / "offload"), args=["serve"], env=env)
        with (tmp_path / "stderr.log").open("w") as err:
            ledger, exported = anyio.run(_drive, params, err, receiver, db)
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()
    assert ledger > 0
    # OTLP carries doubles: equal to the cent, and to float precision.
    usd = Decimal(ledger) / 10**12
    assert Decimal(exported).quantize(Decimal("0.01")) == usd.quantize(Decimal("0.01"))
    assert abs(Decimal(exported) - usd) < Decimal("1e-12") * max(Decimal(1), usd) * 10
    assert receiver.resource["service.name"] == "offload"
    rows = query(db, "SELECT * FROM attempts")
    assert receiver.total("offload.call.count") == len(rows)
    assert receiver.total("offload.escalation.count", model="claude-haiku-5-5") == 1
    assert receiver.total("offload.token.usage", type="output") == sum(r["output_tokens"] for r in rows)
    assert set(dict(k)["tool"] for k in receiver.latest["offload.cost.usage"]) == {"routed_complete"}


@pytest.mark.parametrize(("value", "on"), [("1", True), ("otlp", True), ("", False), ("0", False)])
def test_switch(value: str, on: bool) -> None:
    assert otel_enabled({"OFFLOAD_OTEL": value}) is on
