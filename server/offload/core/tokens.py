"""Token estimates made without a tokenizer.

`upper_bound_tokens` is a guarantee, not a guess: every real or emulated tokenizer emits tokens
of at least one UTF-8 byte, so bytes bound tokens. Budgets reserve on it so that a settled call
can never cost more than what was reserved. `approx_tokens` is for fitting text to a budget.
"""

from __future__ import annotations

MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 16


def upper_bound_tokens(text: str) -> int:
    return len(text.encode("utf-8"))


def request_upper_bound(texts: list[str], messages: int = 1) -> int:
    return sum(upper_bound_tokens(t) for t in texts) + messages * MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS


def approx_tokens(text: str) -> int:
    # ~4 characters per token is the usual figure for English prose and code.
    return (len(text) + 3) // 4
