"""A workload where cheap answers are usually wrong in ways no check catches.

Each task needs a tier. A model below it answers, as real models do, mostly with something
WELL-FORMED BUT WRONG (it passes any check a host could state), sometimes malformed (fails a
check, if one is given) and sometimes truncated (runs into max_tokens). Replies are scripted
per task id in the emulator, so the answer a tier gives to a task is fixed and every host
meets the same failures.

Families and their tier mix loosely follow a coding agent's sub-work: labels and extraction
(mostly cheap), summaries, code questions over files, unit tests, stack traces, SQL, and a few
hard design questions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

TIERS = ("cheap", "standard", "premium")
RANK = {t: i for i, t in enumerate(TIERS)}
MODEL = {"cheap": "claude-haiku-5-5", "standard": "claude-sonnet-5-5", "premium": "claude-opus-5-5"}
DIFFICULTY = {"cheap": "easy", "standard": "medium", "premium": "hard"}

# family: (tasks, share needing cheap / standard / premium, output tokens of an answer, check a host can state)
FAMILIES: dict[str, tuple[int, tuple[float, float, float], int, dict[str, Any] | None]] = {
    "classify": (40, (0.9, 0.1, 0.0), 4, {"must_match": r"^(bug|billing|feature)$"}),
    "extract": (40, (0.85, 0.15, 0.0), 40, {"response_schema": {"type": "object", "required": ["total", "currency"]}}),
    "summarize": (35, (0.8, 0.15, 0.05), 220, None),
    "code": (50, (0.3, 0.55, 0.15), 500, None),
    "tests": (25, (0.2, 0.7, 0.1), 900, None),
    "debug": (30, (0.3, 0.5, 0.2), 400, None),
    "sql": (25, (0.4, 0.5, 0.1), 250, {"must_match": r"(?is)^\s*(with|select)\b"}),
    "design": (15, (0.0, 0.2, 0.8), 1200, None),
}
# How a below-tier answer fails: well-formed but wrong / malformed / truncated.
FAILURES = (("wrong", 0.75), ("malformed", 0.15), ("truncated", 0.10))

_WORDS = [
    *("deploy", "cache", "invoice", "refund", "retry", "timeout", "owner", "step", "queue", "shard"),
    *("schema", "latency", "region", "handler", "request", "session", "budget", "ledger", "worker"),
    *("thread", "lock", "index", "query", "column", "migration"),
]


def _prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def _system(family: str) -> str:
    # One shared system prompt per family, long enough (> 2,048 tokens) for every tier to cache it.
    rules = "".join(
        f"- Guideline {i} for {family}: be exact, cite the file and line, keep it short.\n" for i in range(150)
    )
    return f"You help a coding agent with {family} sub-tasks.\n{rules}"


def _good(family: str) -> str:
    if family == "classify":
        return "bug"
    if family == "extract":
        return '{"total": 42.5, "currency": "EUR"}'
    if family == "sql":
        return "SELECT id, total FROM invoices WHERE total > 40 ORDER BY id"
    return "ANSWER: the retry loop holds the lock across the await; release it first."


def _wrong(family: str) -> str:
    # Passes any check a host could state for the family: only reading it shows it is wrong.
    if family == "classify":
        return "billing"
    if family == "extract":
        return '{"total": 24.5, "currency": "USD"}'
    if family == "sql":
        return "SELECT id, total FROM invoices WHERE total < 40"
    return "ANSWER: the timeout is too short; raise it to 30 s."


def _malformed(family: str) -> str:
    if family == "classify":
        return "It could be billing, or maybe a bug."
    if family == "extract":
        return "The total seems to be 42.5 euros."
    if family == "sql":
        return "You could query the invoices table for large totals."
    return "Hard to say without more context; it may be the cache, the lock or the timeout."


@dataclass(frozen=True)
class Task:
    id: str
    family: str
    needs: str
    prompt: str
    system: str
    output_tokens: int
    check: dict[str, Any] | None
    hinted: str  # the difficulty a hinting host states (right ~80% of the time)
    triaged: str  # what the cheap tier guesses when asked to rate it
    failures: dict[str, str] = field(default_factory=dict)  # model below the need -> failure mode

    def args(self, *, hint: bool, check: bool, label: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "system": self.system}
        if label:
            out["task"] = self.family
        if hint:
            out["difficulty"] = self.hinted
        if check and self.check:
            out.update(self.check)
        return out


def _near(rng: random.Random, tier: str, right: float) -> str:
    """The tier's difficulty with probability `right`, else an adjacent one."""
    if rng.random() < right:
        return DIFFICULTY[tier]
    i = RANK[tier]
    options = [j for j in (i - 1, i + 1) if 0 <= j < len(TIERS)]
    return DIFFICULTY[TIERS[rng.choice(options)]]


def workload(seed: int = 12, scale: float = 1.0) -> list[Task]:
    rng = random.Random(seed)
    tasks: list[Task] = []
    for family, (count, mix, out_tokens, check) in FAMILIES.items():
        system = _system(family)
        for _ in range(max(3, round(count * scale))):
            tid = f"T{len(tasks):04d}"
            needs = rng.choices(TIERS, weights=mix)[0]
            body = _prose(rng, rng.randint(80, 1500))
            prompt = f"[{tid}] {family}: {body}"
            failures = {
                MODEL[t]: rng.choices([f for f, _ in FAILURES], weights=[w for _, w in FAILURES])[0]
                for t in TIERS[: RANK[needs]]
            }
            tasks.append(
                Task(
                    tid,
                    family,
                    needs,
                    prompt,
                    system,
                    max(1, int(out_tokens * rng.uniform(0.6, 1.4))),
                    check,
                    hinted=_near(rng, needs, 0.8),
                    triaged=_near(rng, needs, 0.7),
                    failures=failures,
                )
            )
    rng.shuffle(tasks)
    return tasks


def script(tasks: list[Task]) -> list[dict[str, Any]]:
    """Emulator rules, keyed by task id: triage guesses, below-tier failures, then right answers."""
    rules: list[dict[str, Any]] = []
    for t in tasks:
        key = rf"\[{t.id}\]"
        rules.append({"match": rf"^Task to rate:\n{key}", "reply": t.triaged, "output_tokens": 1})
    for t in tasks:
        key = rf"\[{t.id}\]"
        for model, mode in t.failures.items():
            if mode == "truncated":
                rules.append({"model": model, "match": key, "reply": _good(t.family), "output_tokens": 100_000})
            else:
                text = _wrong(t.family) if mode == "wrong" else _malformed(t.family)
                rules.append({"model": model, "match": key, "reply": text, "output_tokens": t.output_tokens})
        rules.append({"match": key, "reply": _good(t.family), "output_tokens": t.output_tokens})
    return rules
