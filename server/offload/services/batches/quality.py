"""What a batch item's answer is judged by, and whether a failed one is re-asked one tier up.

Only a batch sent with a check (must_match or response_schema) is judged: there a truncated or
refused answer fails too, as in routed_complete. An unchecked bulk job is never re-asked on its
own, so nobody pays for a second round they did not ask for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from offload.core.checks import Checks, failed_check
from offload.policy import engine
from offload.policy.models import Policy


@dataclass(frozen=True)
class Quality:
    task: str | None = None
    difficulty: str | None = None
    max_tokens: int | None = None
    checks: Checks = field(default_factory=Checks)

    @classmethod
    def of(cls, raw: str) -> Quality:
        """From `batches.quality` (checks were validated at submit)."""
        data: dict[str, Any] = json.loads(raw or "{}")
        return cls(
            task=data.get("task"),
            difficulty=data.get("difficulty"),
            max_tokens=data.get("max_tokens"),
            checks=Checks.build(data.get("response_schema"), data.get("must_match")),
        )

    @property
    def checked(self) -> bool:
        return self.checks.response_schema is not None or self.checks.must_match is not None

    @property
    def family(self) -> str:
        return engine.family_of(self.task, self.difficulty)

    def failed(self, text: str | None, stop_reason: str | None) -> str | None:
        """The check an answer failed (None: it passed, or the batch has no check)."""
        if not self.checked:
            return None
        return failed_check(text or "", stop_reason, self.checks)

    @staticmethod
    def escalates(policy: Policy, tier: str, round_: int, failed: str) -> bool:
        """Whether an answer that failed `failed` on `tier` in round `round_` gets a next round."""
        return (
            engine.tier_above(policy, tier) is not None
            and engine.should_escalate(policy, failed)
            and round_ < policy.escalation.max_steps
        )
