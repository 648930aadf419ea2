"""Trimming a ~10 MB JSON API response: time and peak memory against plain json.loads + dumps.

    python bench/bench_trim.py [--mb 10]

The file is generated (tests/fixtures/realistic.api_page), then a fresh child process reads it
once and measures, in that same process, the baseline (json.loads + json.dumps, the least any
JSON-aware trimmer must do) and each trim variant: best-of-3 wall time without tracing, then
peak traced allocation with tracemalloc. Ratios are trim / baseline; lower is better.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _best_time(fn: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def child(path: str) -> None:
    from offload.trim.content import trim

    text = Path(path).read_text()
    cases: list[tuple[str, Callable[[], object]]] = [
        ("baseline loads+dumps", lambda: json.dumps(json.loads(text))),
        ("trim (default 800 tok)", lambda: trim(text)),
        ("trim fields=[data[].id,…]", lambda: trim(text, fields=["data[].id", "data[].status", "links.next"])),
        ("trim jmespath filter", lambda: trim(text, fields="data[?status=='refunded'].id")),
        ("trim query='Reykjavik'", lambda: trim(text, query="Reykjavik")),
    ]
    rows = [(name, _best_time(fn), _peak(fn)) for name, fn in cases]
    base_t, base_m = rows[0][1], rows[0][2]
    print(f"input: {len(text) / 1e6:.1f} MB of JSON; out: {trim(text).tokens_out} tokens of {trim(text).tokens_in:,}")
    print(f"{'case':<28} {'time s':>8} {'x base':>7} {'peak MB':>8} {'x base':>7}")
    for name, t, m in rows:
        print(f"{name:<28} {t:8.3f} {t / base_t:7.2f} {m / 1e6:8.1f} {m / base_m:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=10.0, help="approximate input size in MB")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    from fixtures.realistic import api_page

    records = max(10, int(args.mb * 1e6 / 920))  # ~920 bytes per pretty-printed record
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "page.json"
        path.write_text(api_page(records=records))
        subprocess.run([sys.executable, __file__, "--child", str(path)], check=True)


if __name__ == "__main__":
    main()
