"""Caching: offload's adaptive breakpoint placement against none, always, and hindsight-optimal.

    python bench/bench_caching.py [--quick]

Three workloads, each run through offload (its services, the real SDK over HTTP, the emulator,
a fresh SQLite ledger) once per `caching.placement`: adaptive (shipped default), never, always
(the shipped `ttl: 5m` / `batch_ttl: 1h`). Emulated time: the emulator's clock is frozen and
moved by the workload's inter-arrival gaps, and offload's placement clock reads the same clock,
so a 20-minute gap really expires a 5m entry.

- agent loop: one host session delegating 40 sub-tasks with the same system prompt (~6k
  tokens) and the same three context files (~15k tokens); gaps mostly 20 s-3 min, a quarter of
  them 6-25 min (past a 5m entry), a few past an hour.
- one-off file questions: 60 questions, each about a file (~6k tokens) no other question
  sends, under one shared system prompt (~3k tokens); gaps 30 s-15 min.
- batch with a shared prefix: 200 reviews classified under one ~4k-token instruction head, the
  API batch's requests spread over 30 minutes, cache hits best-effort (emulator default 64%).

Money is the ledger's: net gain = the `never` run's cost minus the run's cost (the same
answers, so output cancels), and it equals the sum of the ledger's `cache_gain_pusd`.
Hindsight-optimal, per prefix the best of none/5m/1h given the actual future uses: for the
sync workloads computed offline from the same request times and the emulator's prefix sizes
(each prefix's uses priced as reads while an entry lives, else as writes); for the batch,
the best realized run of none / 5m / 1h (the realized one even knows the batch's luck).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Row, usd  # noqa: E402
from offload.config.pricing import load_prices  # noqa: E402
from offload.config.settings import Settings, shipped  # noqa: E402
from offload.core.pricing import Rates  # noqa: E402
from offload.infra.ledger.db import Ledger  # noqa: E402
from offload.services.batches import SubmitArgs, run_once, submit  # noqa: E402
from offload.services.routed import RoutedArgs, routed_complete  # noqa: E402
from offload.state import AppState, open_state  # noqa: E402
from offload_emulator import Clock, EmulatorConfig, serve_in_thread  # noqa: E402

MODEL = "claude-haiku-5-5"
T0 = 1_790_000_000.0
TTL_S = {"5m": 300.0, "1h": 3600.0}
BATCH_DELAY_S = 1800.0
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
]


def text(rng: random.Random, tokens: int, tag: str) -> str:
    """About `tokens` tokens of varied prose (the emulator's tokenizer counts words and punctuation)."""
    words = [f"{rng.choice(WORDS)}{rng.randrange(1000)}" for _ in range(tokens // 2)]
    return f"[{tag}] " + " ".join(words) + "\n"


@dataclass(frozen=True)
class Call:
    at: float  # seconds since the workload began
    prompt: str
    system: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class Workload:
    name: str
    calls: tuple[Call, ...]
    files: dict[str, str]
    # The prefixes the optimum prices: (which calls use it, how its size is read off the `always` run).
    segments: tuple[tuple[str, tuple[int, ...]], ...]


def agent_loop(rng: random.Random, n: int) -> Workload:
    system = text(rng, 6000, "agent system prompt")
    files = {f"src/mod{i}.py": text(rng, 5000, f"module {i}") for i in range(3)}
    t, calls = 0.0, []
    for i in range(n):
        calls.append(Call(t, f"Step {i}: what should change in mod{i % 3}?", system, tuple(files)))
        r = rng.random()
        t += rng.uniform(20, 180) if r < 0.70 else rng.uniform(360, 1500) if r < 0.95 else rng.uniform(3700, 5400)
    # One prefix: system + files, always sent together.
    return Workload("agent loop, stable prefix", tuple(calls), files, (("full", tuple(range(n))),))


def one_offs(rng: random.Random, n: int) -> Workload:
    system = text(rng, 3000, "reviewer system prompt")
    files = {f"docs/q{i}.md": text(rng, 6000, f"document {i}") for i in range(n)}
    t, calls = 0.0, []
    for i in range(n):
        calls.append(Call(t, f"Does q{i} state a deadline?", system, (f"docs/q{i}.md",)))
        t += rng.uniform(30, 900)
    # The shared system prompt; each file set is used once, so its best placement is none (gain 0).
    return Workload("one-off file questions", tuple(calls), files, (("system", tuple(range(n))),))


def policy_file(tmp: Path, placement: str, batch_ttl: str = "1h") -> Path:
    body = shipped("default.yaml").read_text()
    old = "caching:\n  ttl: 5m\n  batch_ttl: 1h\n"
    assert old in body
    body = body.replace(old, f"caching:\n  placement: {placement}\n  ttl: 5m\n  batch_ttl: {batch_ttl}\n")
    for key in ("session_usd: 2", "daily_usd: 20", "monthly_usd: 300"):
        body = body.replace(key, key.split(":")[0] + ": 100000")
    path = tmp / f"{placement}-{batch_ttl}.yaml"
    path.write_text(body)
    return path


async def _totals(ledger: Ledger, batch: bool) -> tuple[int, int, list[Any]]:
    cur = await ledger.conn.execute(
        "SELECT cost_pusd, cache_gain_pusd, cache_write_5m, cache_write_1h, cache_read FROM attempts"
        " WHERE batch = ? ORDER BY id",
        (1 if batch else 0,),
    )
    rows = list(await cur.fetchall())
    await cur.close()
    return sum(r[0] for r in rows), sum(r[1] for r in rows), rows


def _bind_clock(state: AppState, clock: Clock) -> None:
    state.clock = lambda: datetime.fromtimestamp(clock.now(), UTC)


def _settings(policy: Path, root: Path, url: str) -> Settings:
    """One bench run's settings: its own ledger under `root`, against the emulator at `url`."""
    return Settings(
        policy_path=policy, db_path=root / "ledger.db", session_id="bench", roots=(root,), api_key="k", base_url=url
    )


async def run_sync(work: Workload, tmp: Path, placement: str) -> tuple[int, int, list[Any]]:
    root = tmp / f"{work.name[:5]}-{placement}"
    for name, body in work.files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    clock = Clock(start=T0, frozen=True)
    with serve_in_thread(EmulatorConfig(seed=1, clock=clock)) as emu:
        async with open_state(_settings(policy_file(tmp, placement), root, emu.url)) as state:
            _bind_clock(state, clock)
            for call in work.calls:
                clock.advance(max(0.0, T0 + call.at - clock.now()))
                args = RoutedArgs(
                    prompt=call.prompt, system=call.system, context_files=call.files, tier="cheap", max_tokens=64
                )
                await routed_complete(state, "bench", args)
            return await _totals(state.ledger, batch=False)


def segment_gain(times: Sequence[float], tokens: int, rates: Rates, ttl: str | None) -> int:
    """What caching one prefix at `ttl` (None: not at all) gains over plain input on these uses."""
    if ttl is None:
        return 0
    write = rates.cache_write_5m if ttl == "5m" else rates.cache_write_1h
    cost, live_until = 0, float("-inf")
    for t in times:
        cost += tokens * (rates.cache_read if t < live_until else write)
        live_until = t + TTL_S[ttl]
    return len(times) * tokens * rates.input - cost


def optimal_gain(work: Workload, always_rows: list[Any], rates: Rates) -> tuple[int, str]:
    """Hindsight-optimal gain: per prefix, the best of none/5m/1h on the actual use times."""
    total, chose = 0, []
    for kind, idx in work.segments:
        # Prefix sizes as the emulator counted them, from the `always` run: the first call writes
        # the whole prefix; a read of the shared system prompt alone is the largest read there.
        tokens = always_rows[0][2] + always_rows[0][3] if kind == "full" else max(r[4] for r in always_rows)
        times = [work.calls[i].at for i in idx]
        best = max((None, "5m", "1h"), key=lambda ttl: segment_gain(times, tokens, rates, ttl))
        total += segment_gain(times, tokens, rates, best)
        chose.append(f"{kind} {tokens:,} tok: {best or 'none'}")
    return total, ", ".join(chose)


async def run_batch(tmp: Path, placement: str, batch_ttl: str, n: int) -> tuple[int, int, list[Any]]:
    rng = random.Random(7)
    head = "You label product reviews.\n" + text(rng, 4000, "labelling guide") + "Review:\n"
    reviews = tuple(f"review {i}: " + text(rng, 60, "review").strip() for i in range(n))
    root = tmp / f"batch-{placement}-{batch_ttl}"
    root.mkdir()
    clock = Clock(start=T0, frozen=True)
    with serve_in_thread(EmulatorConfig(seed=1, clock=clock, batch_delay_s=BATCH_DELAY_S)) as emu:
        async with open_state(_settings(policy_file(tmp, placement, batch_ttl), root, emu.url)) as state:
            _bind_clock(state, clock)
            await submit(
                state, "bench", SubmitArgs(template=head + "{item}", items=reviews, tier="cheap", max_tokens=8)
            )
            clock.advance(BATCH_DELAY_S + 1)
            for _ in range(20):
                await run_once(state)
                cost, gain, rows = await _totals(state.ledger, batch=True)
                if len(rows) == n:
                    return cost, gain, rows
                await asyncio.sleep(0.2)
    raise RuntimeError("the batch did not settle")


def _rows(name: str, none: int, runs: dict[str, tuple[int, int]], optimal: int, how: str) -> list[Row]:
    out = [Row("caching", f"{name}: no caching", usd(none), "", "", "")]
    for label, (cost, gain) in runs.items():
        share = f"{gain / optimal:.1%} of optimal gain" if optimal > 0 else "optimal gain is 0"
        out.append(
            Row(
                "caching",
                f"{name}: {label}",
                usd(cost),
                f"no caching {usd(none)}",
                f"{cost / none:.3f}x",
                f"net gain {'+' if gain >= 0 else '-'}{usd(abs(gain))}; {share}",
            )
        )
    out.append(Row("caching", f"{name}: hindsight-optimal", usd(none - optimal), "", "", f"gain {usd(optimal)}; {how}"))
    return out


async def _run(quick: bool, seed: int = 14) -> list[Row]:
    prices = load_prices()
    rng = random.Random(seed)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for work in (agent_loop(rng, 20 if quick else 40), one_offs(rng, 30 if quick else 60)):
            got = {p: await run_sync(work, tmp, p) for p in ("never", "adaptive", "always")}
            none = got["never"][0]
            for p in ("adaptive", "always"):
                # Same answers in every run: the cost difference is the cache's net gain, as the ledger says.
                assert none - got[p][0] == got[p][1], (work.name, p, none - got[p][0], got[p][1])
            optimal, how = optimal_gain(work, got["always"][2], prices.price(MODEL).rates)
            runs = {f"{p} placement": (got[p][0], got[p][1]) for p in ("adaptive", "always")}
            rows += _rows(work.name, none, runs, optimal, how)
        n = 100 if quick else 200
        batch = {
            ("never", "1h"): await run_batch(tmp, "never", "1h", n),
            ("adaptive", "1h"): await run_batch(tmp, "adaptive", "1h", n),
            ("always", "1h"): await run_batch(tmp, "always", "1h", n),
            ("always", "5m"): await run_batch(tmp, "always", "5m", n),
        }
        none = batch[("never", "1h")][0]
        realized = {"none": 0, "1h": none - batch[("always", "1h")][0], "5m": none - batch[("always", "5m")][0]}
        best = max(realized, key=lambda k: realized[k])
        hits = sum(1 for r in batch[("adaptive", "1h")][2] if r[4] > 0)
        runs = {
            "adaptive placement": (batch[("adaptive", "1h")][0], batch[("adaptive", "1h")][1]),
            "always (batch_ttl 1h)": (batch[("always", "1h")][0], batch[("always", "1h")][1]),
        }
        how = f"best realized of none/5m/1h: {best}; adaptive run read the cache on {hits}/{n} requests"
        rows += _rows(f"batch of {n}, shared prefix", none, runs, realized[best], how)
    return rows


def run(quick: bool = False, seed: int = 14) -> list[Row]:
    return asyncio.run(_run(quick, seed))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=14, help="draws the sync workloads' sizes and gaps")
    args = ap.parse_args()
    for r in run(args.quick, args.seed):
        print(f"{r.metric:<55} {r.offload:>10} {r.ratio:>7}  {r.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
