"""Fault injection: seeded random errors, dropped connections and latency.

Spec grammar (``--faults``)::

    spec    := item ("," item)*
    item    := STATUS "=" PROB | "drop=" PROB | "latency=" DUR ["-" DUR]
    STATUS  := 408 | 409 | 429 | 500 | 502 | 503 | 504 | 529
    PROB    := decimal in [0, 1]            (the sum of all PROBs must be <= 1)
    DUR     := number ("ms" | "s")          (e.g. 20-80ms, 1.5s)

Each request draws once: at most one fault fires, with the listed probabilities;
latency (uniform in the range) applies to every request that is not dropped.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

STATUSES = (408, 409, 429, 500, 502, 503, 504, 529)
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class FaultSpec:
    # kind ("429", "529", "drop", ...) -> probability; order kept for repeatable draws
    rates: tuple[tuple[str, float], ...] = ()
    latency_s: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def parse(cls, spec: str | None) -> FaultSpec:
        if spec is None or not spec.strip():
            return cls()
        rates: list[tuple[str, float]] = []
        latency = (0.0, 0.0)
        for raw in spec.split(","):
            if not raw.strip():
                continue
            key, sep, value = raw.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep:
                raise FaultSpecError(f"fault spec item {raw.strip()!r}: expected KEY=VALUE")
            if key == "latency":
                lo, _, hi = value.partition("-")
                if hi and lo.strip().replace(".", "").isdigit():
                    # "20-80ms": the unit written once covers both ends.
                    lo += "ms" if hi.strip().endswith("ms") else "s"
                latency = (_duration(lo, raw), _duration(hi or lo, raw))
                if latency[0] > latency[1]:
                    raise FaultSpecError(f"fault spec item {raw.strip()!r}: latency range is reversed")
                continue
            if key != "drop" and (not key.isdigit() or int(key) not in STATUSES):
                raise FaultSpecError(
                    f"fault spec item {raw.strip()!r}: unknown fault {key!r}; use one of "
                    f"{', '.join(map(str, STATUSES))}, drop, latency"
                )
            try:
                prob = float(value)
            except ValueError:
                raise FaultSpecError(f"fault spec item {raw.strip()!r}: probability must be a number") from None
            if not 0.0 <= prob <= 1.0:
                raise FaultSpecError(f"fault spec item {raw.strip()!r}: probability must be in [0, 1]")
            rates = [(k, p) for k, p in rates if k != key] + [(key, prob)]
        if sum(p for _, p in rates) > 1.0 + 1e-9:
            raise FaultSpecError(f"fault spec {spec!r}: probabilities add up to more than 1")
        return cls(tuple(rates), latency)


def _duration(text: str, item: str) -> float:
    m = _DUR.match(text)
    if not m:
        raise FaultSpecError(f"fault spec item {item.strip()!r}: durations look like 20ms or 1.5s")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value


@dataclass(frozen=True)
class Decision:
    kind: str | None  # None, "drop", or a status code as a string
    latency_s: float

    @property
    def status(self) -> int | None:
        return int(self.kind) if self.kind is not None and self.kind.isdigit() else None


@dataclass
class Faults:
    """Live fault state: the spec, a seeded RNG, a queue of forced faults, counters."""

    spec: FaultSpec = field(default_factory=FaultSpec)
    seed: int = 0
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"faults:{self.seed}")
        self._forced: list[str] = []
        self._lock = threading.Lock()

    def set(self, spec: FaultSpec | str | None) -> None:
        with self._lock:
            self.spec = spec if isinstance(spec, FaultSpec) else FaultSpec.parse(spec)

    def force(self, *kinds: int | str) -> None:
        """Make the next requests fail in this order (e.g. ``force(429, 529, "drop")``)."""
        for kind in kinds:
            k = str(kind).lower()
            if k != "drop" and (not k.isdigit() or int(k) not in STATUSES):
                raise FaultSpecError(f"unknown fault {kind!r}")
        with self._lock:
            self._forced.extend(str(k).lower() for k in kinds)

    def decide(self) -> Decision:
        with self._lock:
            if self._forced:
                kind: str | None = self._forced.pop(0)
            else:
                kind = None
                draw = self._rng.random()
                acc = 0.0
                for k, p in self.spec.rates:
                    acc += p
                    if draw < acc:
                        kind = k
                        break
            lo, hi = self.spec.latency_s
            latency = self._rng.uniform(lo, hi) if hi > 0 else 0.0
            if kind is not None:
                self.injected[kind] += 1
            if latency > 0:
                self.injected["latency"] += 1
            return Decision(kind, latency)
