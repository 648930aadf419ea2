"""Guess what kind of text a tool result is, from a sample of its lines. Pure and cheap.

Only the first lines are inspected (JSON excepted, which must parse), so detection stays
O(sample) even on multi-megabyte inputs.
"""

from __future__ import annotations

import csv
import json
import re

KINDS = ("json", "log", "csv", "tsv", "markdown", "text")
SAMPLE_LINES = 200

LOG_MARKER = re.compile(
    r"^\s*(\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d|\[?\d\d:\d\d:\d\d|\w{3} [ \d]\d \d\d:\d\d:\d\d)"  # timestamps
    r"|\b(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|CRITICAL|FATAL|TRACE)\b"
    r"|\b(PASSED|FAILED|SKIPPED|XFAIL|XPASS)\b|^={3,} .* ={3,}$|^_{3,} .* _{3,}$"
    r"|^(\$ |\+ |> |##\[|::(group|endgroup|error|warning))|^npm (ERR|WARN)|^(Step|Run) \d*"
    r"|^\s+at \S+[.(]|^Traceback \(most recent call last\)"
)
_HEADING = re.compile(r"^#{1,6} \S")
_MD_OTHER = re.compile(r"^(```|~~~|\s*[-*+] \S|\s*\d+\. \S|> |\|.*\|\s*$)|\[[^\]]+\]\([^)]+\)")


def parse_json_or_lines(content: str) -> tuple[object, bool] | None:
    """(value, is_json_lines) if `content` is JSON or JSON Lines, else None."""
    stripped = content.strip()
    if not stripped:
        return None
    try:
        return json.loads(stripped), False
    except (ValueError, RecursionError):
        pass
    if stripped[0] not in "{[":
        return None
    rows: list[object] = []
    for line in stripped.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError):
            return None
    return (rows, True) if len(rows) >= 2 else None


def sniff_delimiter(lines: list[str]) -> str | None:
    """The delimiter that gives every sample line the same number (>= 2) of fields, if any."""
    sample = [ln for ln in lines if ln.strip()][:SAMPLE_LINES]
    if len(sample) < 2:
        return None
    for delim in ("\t", ",", ";", "|"):
        if delim not in sample[0]:
            continue
        try:
            counts = {len(row) for row in csv.reader(sample, delimiter=delim)}
        except csv.Error:
            continue
        if len(counts) == 1 and counts.pop() >= 2:
            return delim
    return None


def detect(content: str) -> tuple[str, tuple[object, bool] | None]:
    """The kind, and the parsed JSON when it is JSON (so callers never parse twice)."""
    if content.lstrip()[:1] in ("{", "["):
        parsed = parse_json_or_lines(content)
        if parsed is not None:
            return "json", parsed
    return detect_text_kind(content), None


def detect_text_kind(content: str) -> str:
    """The kind of content already known not to be JSON."""
    head = content[:200_000]
    lines = head.splitlines()[:SAMPLE_LINES]
    if not head.endswith("\n") and len(head) < len(content) and lines:
        lines.pop()  # a line cut by the sample window would break the delimiter count
    delim = sniff_delimiter(lines)
    if delim is not None:
        return "tsv" if delim == "\t" else "csv"
    nonblank = [ln for ln in lines if ln.strip()]
    if not nonblank:
        return "text"
    log_hits = sum(1 for ln in nonblank if LOG_MARKER.search(ln))
    headings = sum(1 for ln in nonblank if _HEADING.match(ln))
    md_hits = headings + sum(1 for ln in nonblank if _MD_OTHER.search(ln))
    if log_hits >= max(2, len(nonblank) * 0.3) and log_hits > md_hits:
        return "log"
    if (headings >= 1 and md_hits >= 2) or md_hits >= max(3, len(nonblank) * 0.2):
        return "markdown"
    return "text"
