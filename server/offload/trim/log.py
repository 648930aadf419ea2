"""Trim logs and command output: keep failures, their stack traces and the summary; fold noise.

Order of importance (what survives a tight budget first):
  0  lines matching the query (if any)
  1  final summary lines (pytest's `=== 1 failed, 2301 passed in 12.3s ===`, `Tests: 3 failed`)
  2  errors/failures and their stack traces (frames folded to the informative ones)
  3  warnings and the body of pytest's FAILURES section
  4  everything else, head and tail first, working inwards
Repeated lines (equal once numbers, timestamps and hex ids are masked) are kept once with a count.
"""

from __future__ import annotations

import re

from offload.trim.lines import clip_line, select_lines
from offload.trim.query import Query

_PREFIX = re.compile(r"^(\d{4}-\d\d-\d\d[T ][\d:.,]+Z?\s+|\[\d{4}-\d\d-\d\d[T ][\d:.,]+Z?\]\s*)")
_MASK = re.compile(
    r"\d{4}-\d\d-\d\d[T ][\d:.,]+Z?|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
    r"|\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,}\b|\d+(?:\.\d+)?"
)
ERROR = re.compile(
    r"ERROR|FAILED|FAILURE|\bFAIL\b|Traceback \(most recent call last\)|AssertionError|\bpanic(ked)?\b"
    r"|Exception\b|\b[Ee]rror:|\bfatal\b|FATAL|CRITICAL|^E {2,}\S|^E\s*$|exit (code|status):? *[1-9]"
    r"|exited with (code )?[1-9]|##\[error\]|^npm ERR!|^\S+Error\b"
)
WARNING = re.compile(r"\bWARN(ING)?\b|\b[Ww]arning:|Warning\b|##\[warning\]|^npm WARN")
SUMMARY = re.compile(
    r"^=+ .*\b(passed|failed|errors?|skipped|deselected|no tests ran)\b.* in [\d.]+s(econds)?\b.*=+$"
    r"|^(Tests|Test Suites|Tests run|Test Files):\s+\d|^(FAILED|ERROR) \S+::\S+"
    r"|^(Ran \d+ tests? in|OK\b|FAILED \()|^\d+ (passing|failing|pending)\b|Process completed with exit code"
    r"|^(BUILD (SUCCESS|FAILURE|FAILED)|error: could not compile|test result: )"
)
_SECTION = re.compile(r"^={3,} (.*?) ={3,}$")
_FAIL_HEADER = re.compile(r"^_{3,} .+ _{3,}$")
_PY_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+')
_AT_FRAME = re.compile(r"^\s+at (.+)$")
_BORING_FRAME = re.compile(
    r"site-packages|dist-packages|node_modules|/lib/python\d|<frozen |node:internal|\(internal/"
    r"|^(java|javax|jdk|sun|kotlin|scala)\.|^org\.(junit|apache\.maven|gradle)\.|/usr/lib/"
)


def _frame_target(body: str) -> str | None:
    m = _PY_FRAME.match(body)
    if m:
        return m.group(1)
    m = _AT_FRAME.match(body)
    return m.group(1) if m else None


def _fold_frames(bodies: list[str]) -> list[bool]:
    """Which lines to drop inside stack traces: boring frames (+ their code line), middle frames."""
    drop = [False] * len(bodies)
    i, n = 0, len(bodies)
    while i < n:
        if _frame_target(bodies[i]) is None:
            i += 1
            continue
        # A run of frames; a Python frame owns the indented code line that follows it.
        frames: list[tuple[int, int]] = []
        j = i
        while j < n and _frame_target(bodies[j]) is not None:
            end = j + 1
            is_py = _PY_FRAME.match(bodies[j]) is not None
            if is_py and end < n and bodies[end].startswith("    ") and _frame_target(bodies[end]) is None:
                end += 1
            frames.append((j, end))
            j = end
        keep_idx = {0, len(frames) - 1}
        informative = [k for k, (a, _) in enumerate(frames) if not _BORING_FRAME.search(_frame_target(bodies[a]) or "")]
        keep_idx.update(informative[:1] + informative[-2:])
        for k, (a, b) in enumerate(frames):
            if k not in keep_idx:
                for x in range(a, b):
                    drop[x] = True
        i = j
    return drop


def _templates(bodies: list[str], folded: list[bool]) -> tuple[list[str], dict[str, int], dict[str, int]]:
    """Each line's template (numbers masked), how often each template occurs, and where first."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    templates: list[str] = []
    for i, body in enumerate(bodies):
        t = _MASK.sub("#", body.strip())
        templates.append(t)
        if folded[i] or not t:
            continue
        counts[t] = counts.get(t, 0) + 1
        first.setdefault(t, i)
    return templates, counts, first


def _rank(body: str, i: int, n: int, query: Query | None, *, important: bool, context: bool) -> tuple[int, ...]:
    """Lower ranks are kept first: query hits, summaries, errors (later first), context, the rest."""
    if query is not None and query.hits(body):
        return (0, -query.score(body))
    if SUMMARY.search(body):
        return (1, -i)
    if important:
        return (2, -i)  # later errors first: the last one is usually the cause
    if context:
        return (3, -i)
    return (4, min(i, n - 1 - i))


def _notes(repeated: int, frames: int, cut: int, n: int) -> list[str]:
    notes = []
    if repeated:
        notes.append(f"{repeated:,} repeated lines")
    if frames:
        notes.append(f"{frames:,} stack-frame lines folded")
    other = cut - repeated - frames
    if other > 0:
        notes.append(f"{other:,} of {n:,} lines cut")
    return notes


def trim_log(content: str, *, query: Query | None, budget_chars: int) -> tuple[str, list[str], bool | None]:
    raw = content.splitlines()
    bodies = [_PREFIX.sub("", ln) for ln in raw]
    n = len(raw)
    folded = _fold_frames(bodies)
    # Collapse repeats by template: the first occurrence carries the count.
    templates, counts, first = _templates(bodies, folded)
    lines: list[str] = []
    ranks: list[tuple[int, ...] | None] = []
    repeated = 0
    in_failures = False
    in_trace = False
    matched = 0
    for i, (line, body) in enumerate(zip(raw, bodies, strict=True)):
        t = templates[i]
        sect = _SECTION.match(body)
        if sect:
            title = sect.group(1).upper()
            in_failures = "FAILURES" in title or title == "ERRORS"
        trace_end = in_trace and bool(body) and not body[0].isspace()
        if "Traceback (most recent call last)" in body:
            in_trace, trace_end = True, False
        elif trace_end:
            in_trace = False
        shown = clip_line(line)
        if t and first.get(t, i) != i and not folded[i]:
            repeated += 1
            lines.append(shown)
            ranks.append(None)
            continue
        if t and counts.get(t, 1) > 1 and first.get(t) == i:
            shown += f"  [×{counts[t]:,} similar]"
        lines.append(shown)
        if folded[i] or not body.strip():
            ranks.append(None)
            continue
        if query is not None and query.hits(body):
            matched += 1
        important = bool(ERROR.search(body) or in_trace or trace_end or _FAIL_HEADER.match(body))
        context = bool(WARNING.search(body) or in_failures or sect)
        ranks.append(_rank(body, i, n, query, important=important, context=context))
    text, cut = select_lines(lines, ranks, budget_chars)
    answered = None if query is None else matched > 0
    return text, _notes(repeated, sum(folded), cut, n), answered
