"""Pick the most important lines of a text that fit a character budget, keep them in order.

Every line-based trimmer (logs, markdown, plain text) ranks its lines and lets this module
choose: lines are taken best-rank first while the output, including one
`[… N lines cut …]` marker per gap, stays within the budget. The marker cost is tracked
exactly as lines are added, so the result always fits without re-rendering.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_LINE_CHARS = 400
# Longest marker we can emit, plus its newline: "[… 99,999,999 lines cut …]".
_MARKER_COST = len("[… 99,999,999 lines cut …]") + 1


def cut_marker(n: int) -> str:
    return f"[… {n:,} line{'s' if n != 1 else ''} cut …]"


def clip_line(line: str, limit: int = MAX_LINE_CHARS) -> str:
    if len(line) <= limit:
        return line
    return line[:limit] + f"…(+{len(line) - limit} chars)"


def select_lines(lines: Sequence[str], ranks: Sequence[tuple[int, ...] | None], budget_chars: int) -> tuple[str, int]:
    """Keep lines by ascending rank (None = never), render in original order with gap markers.

    Blank lines are best ranked None: a gap made only of them is rendered as is, for free.
    Returns the text and how many non-blank lines were cut.
    """
    n = len(lines)
    order = sorted((r, i) for i, r in enumerate(ranks) if r is not None)
    chosen = [False] * n
    # Start with everything cut: one gap covering all lines (if there are any).
    gaps = 1 if n else 0
    used = 0
    for _, i in order:
        cost = len(lines[i]) + 1
        left_open = i > 0 and not chosen[i - 1]
        right_open = i < n - 1 and not chosen[i + 1]
        delta_gaps = (1 if left_open and right_open else 0) - (0 if left_open or right_open else 1)
        if used + cost + (gaps + delta_gaps) * _MARKER_COST > budget_chars:
            continue  # a shorter line further down the ranking may still fit
        chosen[i] = True
        used += cost
        gaps += delta_gaps
    out: list[str] = []
    run: list[str] = []
    cut = 0

    def flush() -> None:
        nonlocal cut
        # A gap of only blank lines is shown as itself: never longer than the marker it replaces.
        if len(run) < _MARKER_COST and not any(ln.strip() for ln in run):
            out.extend(run)
        else:
            out.append(cut_marker(len(run)))
            cut += len(run)
        run.clear()

    for i, line in enumerate(lines):
        if chosen[i]:
            if run:
                flush()
            out.append(line)
        else:
            run.append(line)
    if run:
        flush()
    return "\n".join(out), cut
