"""Deterministic, zero-token trimming of bulky tool results (JSON, logs, tables, text).

`trim` is pure: no I/O, no model calls, same input → same output. It detects the kind, hands
the content to the kind's trimmer, and guarantees the result fits `max_tokens` (as measured by
`offload.core.tokens.approx_tokens`): if a trimmer's output is still too long, or a trimmer cannot
cope with the input (e.g. `kind="json"` forced on text that is not JSON), it falls back to a
plain head-and-tail cut rather than raising. Only bad *arguments* raise `InputError`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass

from offload.core.errors import InputError
from offload.core.tokens import approx_tokens
from offload.trim.detect import KINDS, detect, detect_text_kind, parse_json_or_lines, sniff_delimiter
from offload.trim.jsondoc import trim_json
from offload.trim.lines import cut_marker
from offload.trim.log import trim_log
from offload.trim.query import Query, parse_query
from offload.trim.table import trim_table
from offload.trim.text import trim_text

MIN_MAX_TOKENS = 20
CHARS_PER_TOKEN = 4  # the inverse of approx_tokens: len(text) <= 4 * n  <=>  approx_tokens(text) <= n


@dataclass(frozen=True)
class TrimResult:
    text: str
    kind: str
    tokens_in: int
    tokens_out: int
    removed: tuple[str, ...] = ()
    query_answered: bool | None = None


def trim(
    content: str,
    *,
    fields: str | Sequence[str] | None = None,
    query: str | None = None,
    max_tokens: int = 800,
    kind: str | None = None,
) -> TrimResult:
    if max_tokens < MIN_MAX_TOKENS:
        raise InputError(f"max_tokens={max_tokens} is too small to show anything; send at least {MIN_MAX_TOKENS}")
    if kind is not None and kind not in KINDS:
        raise InputError(f"kind={kind!r} is not one of {', '.join(KINDS)}; send one of those or omit it")
    budget = max_tokens * CHARS_PER_TOKEN
    tokens_in = approx_tokens(content)
    q = parse_query(query)
    has_fields = fields is not None and (not isinstance(fields, str) or bool(fields.strip()))

    parsed: tuple[object, bool] | None = None
    if kind is None:
        kind, parsed = detect(content)
    elif kind == "json":
        parsed = parse_json_or_lines(content)
    if q is None and not has_fields and len(content) <= budget:
        return TrimResult(content, kind, tokens_in, tokens_in)

    notes: list[str] = []
    text: str | None = None
    answered: bool | None = None
    try:
        text, kind_notes, answered = _dispatch(content, kind, parsed, fields, q, budget)
        notes += kind_notes
    except _NotThisKind as exc:
        notes.append(str(exc))
        kind = "text"
    except (RecursionError, csv.Error) as exc:
        # Pathological input (e.g. JSON nested thousands deep): degrade instead of failing.
        notes.append(f"could not trim as {kind} ({type(exc).__name__}); cut as plain text")
        kind = "text"
    if text is None:
        text, kind_notes, answered = trim_text(content, markdown=False, query=q, budget_chars=budget)
        notes += kind_notes
    if len(text) > budget:
        text = hard_cut(text, budget)
        notes.append("output cut to fit max_tokens")
    return TrimResult(text, kind, tokens_in, approx_tokens(text), tuple(notes), answered)


class _NotThisKind(Exception):
    pass


def _dispatch(
    content: str,
    kind: str,
    parsed: tuple[object, bool] | None,
    fields: str | Sequence[str] | None,
    q: Query | None,
    budget: int,
) -> tuple[str, list[str], bool | None]:
    if kind == "json":
        if parsed is None:
            raise _NotThisKind("not valid JSON or JSON Lines; trimmed as plain text")
        value, is_lines = parsed
        text, notes, answered = trim_json(value, fields=fields, query=q, budget_chars=budget, size_chars=len(content))
        if is_lines:
            notes.insert(0, "JSON Lines shown as one JSON array")
        return text, notes, answered
    if kind in ("csv", "tsv"):
        delim = "\t" if kind == "tsv" else _delimiter(content)
        return trim_table(content, delim=delim, fields=fields, query=q, budget_chars=budget)
    if kind == "log":
        return trim_log(content, query=q, budget_chars=budget)
    return trim_text(content, markdown=kind == "markdown", query=q, budget_chars=budget)


def _delimiter(content: str) -> str:
    found = sniff_delimiter(content[:200_000].splitlines()[:200])
    return found if found and found != "\t" else ","


def hard_cut(text: str, budget_chars: int) -> str:
    """Head and tail of `text` with a cut marker, at most `budget_chars` long."""
    if len(text) <= budget_chars:
        return text
    cut_lines = text.count("\n")  # an upper bound for the marker's width
    marker = "\n" + cut_marker(cut_lines) + "\n"
    room = max(0, budget_chars - len(marker))
    head = text[: room - room // 3]
    tail = text[len(text) - room // 3 :] if room // 3 else ""
    dropped = text.count("\n", len(head), len(text) - len(tail))
    out = head + "\n" + cut_marker(dropped) + "\n" + tail
    return out if len(out) <= budget_chars else out[:budget_chars]


__all__ = ["MIN_MAX_TOKENS", "TrimResult", "detect_text_kind", "hard_cut", "trim"]
