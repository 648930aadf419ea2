"""Run every benchmark, print one table, write bench/RESULTS.md.

    python bench/run.py [--quick] [--only savings,overhead,...]

Each benchmark module runs in its own child process (so peak-memory figures are not polluted
by the ones before it) with a time limit. Modules exposing `run(quick=...) -> list[Row]` become
table rows; modules with only a `main()` (colleagues' ledger/batch/trim benches) are run as
scripts and their output is kept verbatim below the table. A missing module is reported as
"not available" rather than failing the run.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Row, machine, normalize, table  # noqa: E402

# (section, module); order is the table's order.
BENCHES = [
    ("savings", "bench_savings"),
    ("quality", "bench_quality"),
    ("overhead", "bench_overhead"),
    ("context", "bench_context"),
    ("ledger", "bench_ledger"),
    ("batch", "bench_batch"),
    ("caching", "bench_caching"),
    ("trim", "bench_trim"),
    ("dashboard", "bench_dashboard"),
]
MARK = "@@ROWS@@"
TIME_LIMIT_S = 240


def child(module: str, section: str, quick: bool) -> None:
    """In the child process: run one module's `run()` and print its rows as JSON."""
    mod = importlib.import_module(module)
    params = inspect.signature(mod.run).parameters
    raw = mod.run(quick=quick) if "quick" in params else mod.run()
    rows = [normalize(section, r).as_dict() for r in (raw or [])]
    print(MARK + json.dumps(rows))


def _runnable_rows(module: str) -> bool:
    """True when the module has a run() callable with no required arguments."""
    if "def run(" not in (HERE / f"{module}.py").read_text():
        return False
    mod = importlib.import_module(module)
    fn = getattr(mod, "run", None)
    if not callable(fn):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in inspect.signature(fn).parameters.values()
    )


def run_one(section: str, module: str, quick: bool) -> tuple[list[Row], str]:
    path = HERE / f"{module}.py"
    if not path.exists():
        return [Row(section, module, "not available", "", "", "module not present yet")], ""
    t0 = time.perf_counter()
    if _runnable_rows(module):
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", module, section]
        argv += ["--quick"] if quick else []
    else:
        argv = [sys.executable, str(path)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIME_LIMIT_S, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return [Row(section, module, "timed out", "", "", f"> {TIME_LIMIT_S} s")], ""
    took = f"{time.perf_counter() - t0:.0f} s"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [Row(section, module, "failed", "", "", f"exit {done.returncode}: {tail[0][:150]}")], done.stderr
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return [Row(**r) for r in json.loads(line[len(MARK) :])], ""
    return [Row(section, module, "see output below", "", "", f"ran in {took}")], done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a minute or two)")
    ap.add_argument("--only", help="comma-separated sections, e.g. savings,context")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--child", nargs=2, metavar=("MODULE", "SECTION"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.quick)
        return 0
    wanted = set(args.only.split(",")) if args.only else None
    rows: list[Row] = []
    outputs: list[tuple[str, str]] = []
    for section, module in BENCHES:
        if wanted and section not in wanted:
            continue
        print(f"running {module} ...", file=sys.stderr, flush=True)
        got, text = run_one(section, module, args.quick)
        rows += got
        if text:
            outputs.append((module, text))
    info = machine()
    rendered = table(rows)
    print(rendered)
    header = (
        f"# offload benchmarks\n\n{info['date']} · {info['cpus']} CPUs · Python {info['python']} · "
        f"{info['platform']}{' · --quick' if args.quick else ''}\n\n"
        "Produced by `python bench/run.py`. Ratios are offload / baseline, measured side by side in the "
        "same process (lower is better, except the adequate-tier share).\n\n"
    )
    extra = "".join(f"\n## {m} (output)\n\n```\n{t}\n```\n" for m, t in outputs)
    Path(args.out).write_text(header + rendered + "\n" + extra)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
