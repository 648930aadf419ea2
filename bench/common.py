"""Shared pieces of the benchmarks: result rows, timing statistics, the machine, the table.

Every figure is measured side by side with its baseline in the same process and reported as a
ratio (offload / baseline), so the numbers compare like with like on whatever machine runs them.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from offload.core.money import to_usd


@dataclass(frozen=True)
class Row:
    section: str  # savings | overhead | context | ledger | batch | trim
    metric: str
    offload: str  # the measured figure, with its unit
    baseline: str  # what it is compared against, with its figure
    ratio: str  # offload / baseline, e.g. "0.21x"; "" when no baseline applies
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def ratio(value: float | int | Decimal, base: float | int | Decimal, places: int = 2) -> str:
    if not base:
        return "n/a"
    if isinstance(value, float) or isinstance(base, float):
        return f"{float(value) / float(base):.{places}f}x"
    return f"{Decimal(value) / Decimal(base):.{places}f}x"


def usd(pusd: int) -> str:
    """Exact dollars, to the hundredth of a cent (costs here are sums of exact pusd)."""
    return f"${to_usd(pusd).quantize(Decimal('0.0001'))}"


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a latency someone actually waited)."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100)
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def latency_rows(section: str, metric: str, ours: Sequence[float], base: Sequence[float], base_name: str) -> list[Row]:
    med, base_med = statistics.median(ours), statistics.median(base)
    p99, base_p99 = percentile(ours, 99), percentile(base, 99)
    n = f"n={len(ours)}/{len(base)}"
    return [
        Row(
            section,
            f"{metric} median",
            ms(med),
            f"{base_name} {ms(base_med)}",
            ratio(med, base_med),
            f"{n}; {(med - base_med) * 1000:+.2f} ms",
        ),
        Row(
            section,
            f"{metric} p99",
            ms(p99),
            f"{base_name} {ms(base_p99)}",
            ratio(p99, base_p99),
            f"{n}; {(p99 - base_p99) * 1000:+.2f} ms",
        ),
    ]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load() -> str:
    """The 1/5/15-minute load averages: benches here share the machine, so say how busy it was."""
    try:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load n/a"


def machine() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load": load(),
    }


def machine_line() -> str:
    m = machine()
    return f"{m['date']} · {m['cpus']} CPUs ({m['cpu']}) · Python {m['python']} · {m['platform']} · {m['load']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """The emulator in its own process (`python -m offload_emulator`); yields its base URL.

    In its own process its work neither shares the measuring process's GIL and event loop nor
    counts toward that process's memory.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "offload_emulator", "--port", str(port), *args], stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError(f"the emulator exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: Iterable[Row]) -> str:
    header = ("section", "metric", "offload", "baseline", "ratio", "note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = (r.section, r.metric, r.offload, r.baseline, r.ratio, r.note)
        lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
    return "\n".join(lines)


def normalize(section: str, raw: Any) -> Row:
    """A colleague's row in whatever shape it comes (Row, mapping or sequence) as a Row."""
    if isinstance(raw, Row):
        return raw
    if isinstance(raw, dict):

        def get(*keys: str) -> str:
            return next((str(raw[k]) for k in keys if k in raw and raw[k] is not None), "")

        return Row(
            get("section") or section,
            get("metric", "name", "what"),
            get("offload", "value", "result"),
            get("baseline", "base"),
            get("ratio"),
            get("note", "notes", "unit"),
        )
    if isinstance(raw, (list, tuple)):
        cells = [str(c) for c in raw] + [""] * 5
        return Row(section, *cells[:5])
    return Row(section, str(raw), "", "", "", "")
