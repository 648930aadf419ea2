"""Split documents into similar-sized chunks on paragraph or line boundaries. Pure.

Chunks are balanced (a 60k-token input becomes two ~30k chunks, not 50k + 10k) so parallel
calls finish together, and each carries the name of the document it came from, so a summary
of a middle chunk can still say which file said what.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from offload.core.tokens import approx_tokens

_PARAGRAPH = re.compile(r"(?<=\n\n)")
_LINE = re.compile(r"(?<=\n)")


@dataclass(frozen=True)
class Piece:
    label: str | None
    text: str
    continued: bool  # not the start of its document


def _units(text: str, limit: int) -> list[str]:
    """`text` cut at paragraph breaks, then line breaks, then hard, into parts of <= limit tokens."""
    out: list[str] = []
    for para in _PARAGRAPH.split(text):
        if approx_tokens(para) <= limit:
            out.append(para)
            continue
        for line in _LINE.split(para):
            if approx_tokens(line) <= limit:
                out.append(line)
                continue
            step = limit * 4  # approx_tokens is chars/4
            out.extend(line[i : i + step] for i in range(0, len(line), step))
    return [u for u in out if u]


def plan(docs: Sequence[tuple[str | None, str]], max_tokens: int) -> list[list[Piece]]:
    """Group `docs` ((label, text) pairs) into chunks of about equal size, each <= max_tokens.

    Units are never reordered; a document may span chunks (its later pieces are `continued`).
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    rough = sum(approx_tokens(text) for _, text in docs)
    # Units well below a chunk's share, so packing can balance chunks; never above max_tokens.
    unit_limit = max(1, min(max_tokens, math.ceil(rough / math.ceil(max(rough, 1) / max_tokens)) // 8))
    units = [(label, _units(text, unit_limit)) for label, text in docs]
    sizes = [approx_tokens(u) for _, us in units for u in us]
    total = sum(sizes)
    if total == 0:
        return []
    # Greedy packing to capacity avg + largest unit needs at most ceil(total / max_tokens) chunks:
    # every chunk but the last is filled past avg, so the remainder fits in the last one.
    target = min(max_tokens, math.ceil(total / math.ceil(total / max_tokens)) + max(sizes))
    chunks: list[list[Piece]] = []
    current: list[Piece] = []
    size = 0
    for label, doc_units in units:
        first = True
        buf: list[str] = []
        for unit in doc_units:
            n = approx_tokens(unit)
            if size + n > target and (current or buf):
                if buf:
                    current.append(Piece(label, "".join(buf), not first))
                    first, buf = False, []
                chunks.append(current)
                current, size = [], 0
            buf.append(unit)
            size += n
        if buf:
            current.append(Piece(label, "".join(buf), not first))
    if current:
        chunks.append(current)
    return chunks


def render(chunk: Sequence[Piece]) -> str:
    """One chunk as text, each piece under a header naming its document."""
    parts = []
    for p in chunk:
        if p.label is None:
            parts.append(p.text)
        else:
            parts.append(f"=== {p.label}{' (continued)' if p.continued else ''} ===\n{p.text}")
    return "\n\n".join(part.rstrip("\n") for part in parts)


def split(docs: Sequence[tuple[str | None, str]], max_tokens: int) -> list[str]:
    return [render(c) for c in plan(docs, max_tokens)]


__all__ = ["Piece", "plan", "render", "split"]
