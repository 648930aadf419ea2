"""8 `offload serve` stdio processes x 4 concurrent calls on one ledger, under seeded API faults.

Every response the emulator served must become exactly one ledger row, no hold may be left,
and no call may end in the SDK's bare "Error executing tool". Real parts only: stdio
subprocesses spoken to by the real mcp client, the real SDK to the emulator, one SQLite file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from helpers import server_env
from offload.config.pricing import load_prices
from offload.core.pricing import Usage
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.journal import pending

from .conftest import is_generic_error, ledger_rows, result_text

pytestmark = pytest.mark.anyio

VENV_BIN = Path(sys.executable).parent
OFFLOAD = str(VENV_BIN / "offload")
FAULTS = "429=0.1,529=0.05,drop=0.02"
SERVERS = 8
CALLS_EACH = 4


def _params(tmp_path: Path, base_url: str, session: str, fsize: int | None = None) -> StdioServerParameters:
    env = server_env(tmp_path, base_url, session)
    if fsize is None:
        return StdioServerParameters(command=OFFLOAD, args=["serve"], env=env, cwd=str(tmp_path))
    # The disk fills up: no file of the server may grow past `fsize` bytes (writes past it fail
    # with EFBIG, which SQLite reports as an I/O error, as it would ENOSPC on a real full disk).
    return StdioServerParameters(
        command="prlimit", args=[f"--fsize={fsize}", OFFLOAD, "serve"], env=env, cwd=str(tmp_path)
    )


async def run_fleet(
    tmp_path: Path, base_url: str, servers: int, calls_each: int, fsize: int | None = None
) -> dict[str, tuple[bool, str]]:
    """Start `servers` stdio servers, `calls_each` concurrent routed_complete calls on each."""
    outcomes: dict[str, tuple[bool, str]] = {}

    async def server(n: int) -> None:
        with (tmp_path / f"s{n}.stderr").open("w") as err:
            params = _params(tmp_path, base_url, f"s{n}", fsize)
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=180) as client:

                async def call(i: int) -> None:
                    args: dict[str, Any] = {"prompt": f"server {n} task {i}: name a prime above {n * 13 + i}"}
                    if i % 2 == 0:  # a check the default reply fails: some calls climb the ladder
                        args["must_match"] = r"^PRIME \d+$"
                    result = await client.call_tool("routed_complete", args)
                    outcomes[f"{n}.{i}"] = (bool(result.is_error), result_text(result))

                async with anyio.create_task_group() as tg:
                    for i in range(calls_each):
                        tg.start_soon(call, i)

    async with anyio.create_task_group() as tg:
        for n in range(servers):
            tg.start_soon(server, n)
    return outcomes


async def test_eight_servers_four_calls_each_lose_no_paid_answer(running: Callable[..., Any], tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    with running(seed=20261129, faults=FAULTS) as emu:
        outcomes = await run_fleet(tmp_path, emu.url, SERVERS, CALLS_EACH)
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
        injected = dict(emu.state.faults.injected)

    assert sum(injected.values()) > 0, injected
    assert len(outcomes) == SERVERS * CALLS_EACH
    for key, (is_error, text) in sorted(outcomes.items()):
        assert not is_generic_error(text), f"call {key}: bare error {text!r}"
        if is_error:
            assert "Claude API" in text, f"call {key}: {text!r}"
    rows = ledger_rows(db, "SELECT request_key, model, cost_pusd FROM attempts")
    assert len(rows) == len(served), (len(rows), len(served))
    prices = load_prices()
    assert sorted(int(r["cost_pusd"]) for r in rows) == sorted(
        prices.cost(str(r.model), Usage.from_api(r.usage)) for r in served
    )
    assert len({r["request_key"] for r in rows}) == len(rows)
    assert ledger_rows(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
    for n in range(SERVERS):
        assert "Traceback" not in (tmp_path / f"s{n}.stderr").read_text()


async def test_eight_servers_on_a_filling_disk_keep_every_paid_answer_in_the_journal(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    led = await Ledger.open(db)  # the ledger exists; from here on its files can barely grow
    await led.close()
    # Room for the servers to start and a few calls (each call writes a few WAL pages), then full.
    fsize = db.stat().st_size + 320_000
    with running(seed=7, faults=FAULTS) as emu:
        outcomes = await run_fleet(tmp_path, emu.url, SERVERS, CALLS_EACH, fsize=fsize)
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]

    assert len(outcomes) == SERVERS * CALLS_EACH
    for key, (is_error, text) in sorted(outcomes.items()):
        assert not is_generic_error(text), f"call {key}: bare error {text!r}"
        # Refused before anything was sent, or an API failure; an answer paid for is returned.
        assert not is_error or "could not be written" in text or "Claude API" in text, f"call {key}: {text!r}"
    answered = [t for e, t in outcomes.values() if not e]
    assert answered, "the calls that were paid for must return their answers"
    refused = [t for e, t in outcomes.values() if e and "could not be written" in t]
    rows = ledger_rows(db, "SELECT COUNT(*) AS n FROM attempts")[0]["n"]
    spooled = pending(db)
    assert refused and spooled > 0, (len(refused), spooled, rows)  # the disk did fill up
    assert rows + spooled == len(served), (rows, spooled, len(served))  # every paid answer kept

    led = await Ledger.open(db)  # room again: the next start records the journal, once
    await led.close()
    led = await Ledger.open(db)
    await led.close()
    rows = ledger_rows(db, "SELECT request_key, cost_pusd FROM attempts")
    prices = load_prices()
    assert sorted(int(r["cost_pusd"]) for r in rows) == sorted(
        prices.cost(str(r.model), Usage.from_api(r.usage)) for r in served
    )
    assert pending(db) == 0
    assert ledger_rows(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
