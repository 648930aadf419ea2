"""Small text formatting shared by every tool's footer and data: token counts and clipping."""

from __future__ import annotations


def fmt_tokens(tokens: int) -> str:
    """`812`, `3.1k`: short enough for a one-line footer."""
    return f"{tokens / 1000:.1f}k" if tokens >= 1000 else str(tokens)


def clip(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters, the cut marked with an ellipsis."""
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
