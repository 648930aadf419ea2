"""No paid answer lost: many server processes, injected API faults, a killed server, a full disk.

    python bench/bench_reliability.py [--servers 8] [--calls 4] [--seed N]

Three runs on fresh temp ledgers against the local emulator (no API key needed):

1. fleet: N `offload serve` stdio processes x M concurrent routed_complete calls each, under
   seeded faults 429=0.1, 529=0.05, drop=0.02. Every 200 the emulator served must be one row.
2. kill: one server gets a stream of calls and is SIGKILLed while some are in flight; a new
   server on the same ledger frees the dead process's holds. Responses the API completes after
   the kill never reach offload: they show as `unrecorded_in_flight_at_kill`, not as `lost`.
   The same fleet again on a filling disk: `prlimit --fsize` lets no server file grow more than
   160 KB, so ledger writes start failing (EFBIG, an I/O error to SQLite, as ENOSPC would be).
3. disk full: the ledger's write connection is capped (PRAGMA max_page_count, SQLite's own
   SQLITE_FULL); paid answers go to the journal and the next open records them once.

Prints one line per run: calls, faults, kills, served, rows, holds, lost (an answer offload received
without a row).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

# The same server environment and raw handshake the reliability tests use.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import VENV_BIN, handshake, server_env
from offload.config.settings import Settings, shipped
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.journal import pending
from offload.metering.metered import collecting_notes
from offload.services import routed
from offload.services.routed import RoutedArgs
from offload.state import open_state
from offload_emulator.config import EmulatorConfig
from offload_emulator.server import serve_in_thread

OFFLOAD = str(VENV_BIN / "offload")
FAULTS = "429=0.1,529=0.05,drop=0.02"


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _served(emu: Any) -> int:
    return len([r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200])


def _line(name: str, **n: int) -> dict[str, Any]:
    row = {"run": name, **n}
    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


async def fleet(tmp: Path, servers: int, calls: int, seed: int, fsize: int | None = None) -> dict[str, Any]:
    bare = 0
    answered = 0
    db = tmp / "ledger.db"
    if fsize is not None:  # the disk fills up: no server file may grow more than `fsize` bytes past now
        led = await Ledger.open(db)
        await led.close()
        fsize += db.stat().st_size
    with serve_in_thread(EmulatorConfig(seed=seed, faults=FAULTS, batch_delay_s=0.2)) as emu:

        async def server(n: int) -> None:
            nonlocal bare, answered
            env = server_env(tmp, emu.url, f"s{n}")
            params = (
                StdioServerParameters(command=OFFLOAD, args=["serve"], env=env)
                if fsize is None
                else StdioServerParameters(command="prlimit", args=[f"--fsize={fsize}", OFFLOAD, "serve"], env=env)
            )
            with (tmp / f"s{n}.stderr").open("w") as err:
                async with Client(stdio_client(params, errlog=err), read_timeout_seconds=300) as c:

                    async def call(i: int) -> None:
                        nonlocal bare, answered
                        args: dict[str, Any] = {"prompt": f"server {n} task {i}"}
                        if i % 2 == 0:
                            args["must_match"] = r"^PRIME \d+$"
                        result = await c.call_tool("routed_complete", args)
                        text = "".join(getattr(b, "text", "") for b in result.content)
                        bare += text.strip().startswith("Error executing tool")
                        answered += not result.is_error

                    async with anyio.create_task_group() as tg:
                        for i in range(calls):
                            tg.start_soon(call, i)

        async with anyio.create_task_group() as tg:
            for n in range(servers):
                tg.start_soon(server, n)
        served, faults = _served(emu), sum(emu.state.faults.injected.values())
    extra: dict[str, int] = {}
    if fsize is not None:
        extra["rows_while_full"] = _count(db, "SELECT COUNT(*) FROM attempts")
        extra["journaled"] = pending(db)
        for _ in range(2):  # room again: the next open replays the journal; a second adds nothing
            led = await Ledger.open(db)
            await led.close()
    rows = _count(db, "SELECT COUNT(*) FROM attempts")
    holds = _count(db, "SELECT COUNT(*) FROM reservations")
    return _line(
        "fleet" if fsize is None else "fleet_disk_full",
        servers=servers,
        calls=servers * calls,
        answered=answered,
        faults=faults,
        kills=0,
        served=served,
        rows=rows,
        holds=holds,
        lost=served - rows,
        bare_errors=bare,
        **extra,
    )


def _rpc(proc: subprocess.Popen[bytes], *messages: dict[str, Any]) -> None:
    assert proc.stdin is not None
    for m in messages:
        proc.stdin.write((json.dumps(m) + "\n").encode())
    proc.stdin.flush()


async def kill(tmp: Path, seed: int) -> dict[str, Any]:
    db = tmp / "ledger.db"
    calls = 40
    with serve_in_thread(EmulatorConfig(seed=seed, faults="latency=20-200ms", batch_delay_s=0.2)) as emu:
        env = server_env(tmp, emu.url, "doomed")
        proc = subprocess.Popen([OFFLOAD, "serve"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        _rpc(proc, *handshake("b"))
        _rpc(
            proc,
            *(
                {
                    "jsonrpc": "2.0",
                    "id": 10 + i,
                    "method": "tools/call",
                    "params": {"name": "routed_complete", "arguments": {"prompt": f"stream task {i}"}},
                }
                for i in range(calls)
            ),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if _count(db, "SELECT COUNT(*) FROM attempts") >= 5:
                    break
            except sqlite3.OperationalError:
                pass
            await anyio.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        emu.state.set_faults(None)
        # A new server on the same ledger: its first reserve frees the dead process's holds.
        params = StdioServerParameters(command=OFFLOAD, args=["serve"], env=server_env(tmp, emu.url, "after"))
        with (tmp / "after.stderr").open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=120) as c:
                await c.call_tool("routed_complete", {"prompt": "after the kill"})
        served = _served(emu)
    rows = _count(db, "SELECT COUNT(*) FROM attempts")
    holds = _count(db, "SELECT COUNT(*) FROM reservations")
    # Responses the emulator completed for requests the dead process was still awaiting are not
    # answers offload ever held: they are reported, not counted as lost.
    return _line(
        "kill",
        calls=calls + 1,
        faults=0,
        kills=1,
        served=served,
        rows=rows,
        holds=holds,
        unrecorded_in_flight_at_kill=served - rows,
    )


async def disk_full(tmp: Path) -> dict[str, Any]:
    policy = tmp / "policy.yaml"
    shutil.copy(shipped("default.yaml"), policy)
    policy.write_text(policy.read_text().replace("store_text: false", "") + "\nstore_text: true\n")
    db = tmp / "ledger.db"
    calls = 5
    with serve_in_thread(EmulatorConfig(seed=3, batch_delay_s=0.2)) as emu:
        settings = Settings(
            policy_path=policy,
            db_path=db,
            session_id="full",
            roots=(tmp,),
            api_key="bench-key",
            base_url=emu.url,
        )
        async with open_state(settings) as state:
            pages = await (await state.ledger.wconn.execute("PRAGMA page_count")).fetchone()
            assert pages is not None
            await state.ledger.wconn.execute(f"PRAGMA max_page_count = {int(pages[0])}")
            with collecting_notes() as notes:
                for i in range(calls):
                    await routed.routed_complete(state, "full", RoutedArgs(prompt=f"task {i} " + "x" * 20_000))
        served = _served(emu)
    spooled = pending(db)
    rows_before = _count(db, "SELECT COUNT(*) FROM attempts")
    for _ in range(2):  # replay once, then a second open must add nothing
        led = await Ledger.open(db)
        await led.close()
    rows = _count(db, "SELECT COUNT(*) FROM attempts")
    holds = _count(db, "SELECT COUNT(*) FROM reservations")
    return _line(
        "disk_full",
        calls=calls,
        faults=0,
        kills=0,
        served=served,
        rows_while_full=rows_before,
        journaled=spooled,
        rows=rows,
        holds=holds,
        lost=served - rows,
        warned=int(bool(notes)),
    )


async def main(servers: int, calls: int, seed: int) -> list[dict[str, Any]]:
    out = []
    for run in ("fleet", "fleet_disk_full", "kill", "disk_full"):
        with tempfile.TemporaryDirectory(prefix=f"offload-rel-{run}-") as d:
            tmp = Path(d)
            if run == "fleet":
                out.append(await fleet(tmp, servers, calls, seed))
            elif run == "fleet_disk_full":
                out.append(await fleet(tmp, servers, calls, seed, fsize=160_000))
            elif run == "kill":
                out.append(await kill(tmp, seed))
            else:
                out.append(await disk_full(tmp))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=8)
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--seed", type=int, default=20261129)
    a = ap.parse_args()
    t0 = time.monotonic()
    rows = anyio.run(main, a.servers, a.calls, a.seed)
    print(f"ran in {time.monotonic() - t0:.0f} s; lost total = {sum(r.get('lost', 0) for r in rows)}")
