"""Trim CSV/TSV: pick columns by name, keep rows matching the query, cap rows, keep the header."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from offload.trim.lines import cut_marker
from offload.trim.query import Query

MAX_CELL_CHARS = 200


def _columns(fields: str | Sequence[str] | None) -> list[str]:
    if fields is None:
        return []
    items = fields.split(",") if isinstance(fields, str) else list(fields)
    return [f.strip() for f in items if f.strip()]


def _line(row: Sequence[str], delim: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delim, lineterminator="").writerow(
        [c if len(c) <= MAX_CELL_CHARS else c[:MAX_CELL_CHARS] + "…" for c in row]
    )
    return buf.getvalue()


def trim_table(
    content: str,
    *,
    delim: str,
    fields: str | Sequence[str] | None,
    query: Query | None,
    budget_chars: int,
) -> tuple[str, list[str], bool | None]:
    rows = list(csv.reader(io.StringIO(content), delimiter=delim))
    rows = [r for r in rows if any(c.strip() for c in r)]
    notes: list[str] = []
    if not rows:
        return "", notes, None if query is None else False
    header, body = rows[0], rows[1:]
    wanted = _columns(fields)
    if wanted:
        by_name = {h.strip().lower(): i for i, h in enumerate(header)}
        idx = [by_name[w.lower()] for w in wanted if w.lower() in by_name]
        unknown = [w for w in wanted if w.lower() not in by_name]
        if unknown:
            notes.append(f"unknown columns {unknown} (columns are: {', '.join(header)[:300]})")
        if idx:
            notes.append(f"{len(header) - len(idx)} of {len(header)} columns")
            header = [header[i] for i in idx]
            body = [[r[i] if i < len(r) else "" for i in idx] for r in body]
    answered: bool | None = None
    if query is not None:
        hits = [r for r in body if query.hits(delim.join(r))]
        answered = bool(hits)
        if hits:
            notes.append(f"{len(body) - len(hits):,} rows not matching the query")
            body = hits
        else:
            notes.append("no row matched the query, showing the first rows")
    total = len(body)
    out = [_line(header, delim)]
    used = len(out[0]) + 1
    reserve = len(cut_marker(total)) + 1
    kept = 0
    for r in body:
        line = _line(r, delim)
        if used + len(line) + 1 + (reserve if kept + 1 < total else 0) > budget_chars:
            break
        out.append(line)
        used += len(line) + 1
        kept += 1
    if kept < total:
        out.append(cut_marker(total - kept))
        notes.append(f"{total - kept:,} of {total:,} rows")
    return "\n".join(out), notes, answered
