"""Trim Markdown and plain text: the queried sections, or the outline plus head and tail."""

from __future__ import annotations

import re

from offload.trim.lines import clip_line, select_lines
from offload.trim.query import Query

_HEADING = re.compile(r"^(#{1,6}) \S")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEAD_TAIL_FIRST = 8  # lines at each end that outrank the outline


def _headings(lines: list[str], markdown: bool) -> list[int]:
    """Heading level per line (0 = not a heading), ignoring '#' lines inside code fences."""
    levels = [0] * len(lines)
    if not markdown:
        return levels
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            m = _HEADING.match(line)
            if m:
                levels[i] = len(m.group(1))
    return levels


def _blocks(lines: list[str], levels: list[int]) -> list[int]:
    """Paragraph id per line: blank lines and headings start new paragraphs."""
    ids, cur = [], 0
    for i, line in enumerate(lines):
        if not line.strip() or levels[i]:
            cur += 1
        ids.append(cur)
        if levels[i]:
            cur += 1
    return ids


def trim_text(
    content: str, *, markdown: bool, query: Query | None, budget_chars: int
) -> tuple[str, list[str], bool | None]:
    lines = [clip_line(ln) for ln in content.splitlines()]
    n = len(lines)
    levels = _headings(lines, markdown)
    ranks: list[tuple[int, ...] | None] = []
    answered: bool | None = None
    if query is not None:
        matched = _query_ranks(lines, levels, query)
        answered = matched is not None
        if matched is not None:
            ranks = matched
    if not ranks:  # no query, or nothing matched it: the outline plus head and tail
        for i in range(n):
            edge = min(i, n - 1 - i)
            if not lines[i].strip():
                ranks.append(None)
            elif edge < _HEAD_TAIL_FIRST:
                ranks.append((0, edge, 0))
            elif levels[i]:
                ranks.append((1, levels[i], i))
            else:
                ranks.append((2, edge, 0))
    text, cut = select_lines(lines, ranks, budget_chars)
    notes = [f"{cut:,} of {n:,} lines cut"] if cut else []
    if answered is False:
        notes.append("nothing matched the query, showing the outline, head and tail")
    return text, notes, answered


def _query_ranks(lines: list[str], levels: list[int], query: Query) -> list[tuple[int, ...] | None] | None:
    """Matching paragraphs, their sections and headings, and a top-level outline; None if no match."""
    n = len(lines)
    blocks = _blocks(lines, levels)
    block_text: dict[int, list[str]] = {}
    for i, b in enumerate(blocks):
        block_text.setdefault(b, []).append(lines[i])
    block_score = {b: query.score("\n".join(t)) for b, t in block_text.items()}
    # Sections: a heading and everything until the next heading of the same or a higher level.
    section_of = [-1] * n
    parents: list[list[int]] = [[] for _ in range(n)]  # heading lines above each line
    stack: list[int] = []
    for i in range(n):
        if levels[i]:
            while stack and levels[stack[-1]] >= levels[i]:
                stack.pop()
            stack.append(i)
        parents[i] = list(stack)
        section_of[i] = stack[-1] if stack else -1
    if not any(block_score.values()):
        return None
    section_score: dict[int, int] = {}
    for i in range(n):
        s = block_score[blocks[i]]
        for h in parents[i]:
            section_score[h] = max(section_score.get(h, 0), s)
    ranks: list[tuple[int, ...] | None] = []
    for i in range(n):
        own = block_score[blocks[i]]
        sec = section_of[i]
        if not lines[i].strip():
            ranks.append(None)
        elif levels[i] and section_score.get(i, 0):
            ranks.append((0, -section_score[i], i))  # heading of (or above) a matching section
        elif own and lines[i].strip():
            ranks.append((1, -own, i))
        elif sec >= 0 and section_score.get(sec, 0):
            ranks.append((2, -section_score[sec], i))  # the rest of a matching section
        elif 0 < levels[i] <= 2:
            ranks.append((3, levels[i], i))  # a coarse outline, so the reader knows what else exists
        else:
            ranks.append(None)
    return ranks
