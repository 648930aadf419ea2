"""The reference workload: 520 mixed sub-tasks and the emulator script that grades them.

Each task needs a tier (`needs`). The script makes a model below that tier answer in a way that
fails the task's check (`must_match` / `response_schema`) and an adequate one pass it, so a
task ends on an adequate tier only if routing plus checked escalation get it there. Output
token counts are set per kind so costs look like real sub-work, not like one-word echoes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

TIER_RANK = {"cheap": 0, "standard": 1, "premium": 2}

# Shared by every classification task: big enough (> 2,048 tokens) for Haiku to cache it.
LABEL_GUIDE = "Label guide for support tickets.\n" + "".join(
    f"- Rule {i}: tickets mentioning topic {i} about invoices, refunds or charges are 'billing'; "
    f"crashes, stack traces and regressions are 'bug'; requests for new behaviour are 'feature'.\n"
    for i in range(90)
)

MIX = (  # kind, count, tier it needs, task hint
    ("classify", 120, "cheap", "classify"),
    ("extract", 100, "cheap", "extract"),
    ("summarize", 100, "cheap", "summarize"),
    ("standard", 80, "standard", None),
    ("hard", 60, "premium", None),
    ("batch", 60, "cheap", "tag"),
)

SCRIPT: list[dict[str, Any]] = [
    # Below the needed tier: plausible but failing answers.
    {
        "model": "claude-haiku-5-5",
        "match": r"\[need:(standard|premium)\]",
        "reply": "Perhaps; it depends.",
        "output_tokens": 60,
    },
    {"model": "claude-sonnet-5-5", "match": r"\[need:premium\]", "reply": "It is likely B.", "output_tokens": 300},
    # Adequate tiers.
    {
        "match": r"\[need:premium\]",
        "reply": "ANSWER: B, because the invariant holds on every path.",
        "output_tokens": 900,
    },
    {"match": r"\[need:standard\]", "reply": "ANSWER: 17 retries, bounded by the backoff cap.", "output_tokens": 350},
    {"match": r"\[kind:classify\]", "reply": "billing", "output_tokens": 2},
    {"match": r"\[kind:extract\]", "reply": '{"total": 42.5, "currency": "EUR"}', "output_tokens": 18},
    {
        "match": r"\[kind:summarize\]",
        "reply": "Summary: the rollout stalled on step 3; owner: ops.",
        "output_tokens": 160,
    },
    {"match": r"\[kind:batch\]", "reply": "tag: kitchen", "output_tokens": 6},
]


@dataclass(frozen=True)
class Task:
    kind: str
    needs: str
    args: dict[str, Any] = field(default_factory=dict)  # routed_complete arguments

    @property
    def batchable(self) -> bool:
        return self.kind == "batch"


def _prose(rng: random.Random, words: int) -> str:
    vocab = [
        "deploy",
        "cache",
        "invoice",
        "refund",
        "retry",
        "timeout",
        "owner",
        "step",
        "queue",
        "shard",
        "schema",
        "latency",
        "region",
    ]
    return " ".join(rng.choice(vocab) for _ in range(words))


def reference_workload(seed: int = 2026, scale: float = 1.0) -> list[Task]:
    """Deterministic for a seed; `scale` shrinks every kind proportionally (for --quick)."""
    rng = random.Random(seed)
    tasks: list[Task] = []
    for kind, count, needs, hint in MIX:
        for i in range(max(2, round(count * scale))):
            body = _prose(rng, rng.randint(60, 600))
            prompt = f"[kind:{kind}] [need:{needs}] item {i}: {body}"
            args: dict[str, Any] = {"prompt": prompt}
            if hint:
                args["task"] = hint
            if kind == "classify":
                args |= {"system": LABEL_GUIDE, "must_match": r"^(bug|billing|feature)$"}
            elif kind == "extract":
                args["response_schema"] = {"type": "object", "required": ["total", "currency"]}
            elif kind in ("standard", "hard"):
                args["must_match"] = r"^ANSWER:"
                # Half the time the host labels the difficulty; otherwise escalation must find the tier.
                if i % 2 == 0:
                    args["difficulty"] = "medium" if kind == "standard" else "hard"
            tasks.append(Task(kind, needs, args))
    rng.shuffle(tasks)
    return tasks
