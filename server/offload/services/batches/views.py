"""`batch_status` and `batch_results`: compact views of the local record.

Everything here reads the ledger only: results are served from SQLite (collected once by the
collector), so paging through them costs no API calls and works after the API's 29 days.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.core.errors import InputError, PathRefusedError
from offload.core.money import fmt_usd, usd_json, usd_to_pusd
from offload.core.output import ToolOutput
from offload.core.tenancy import current_owner
from offload.core.tokens import approx_tokens
from offload.infra import files
from offload.infra.ledger import batches as store
from offload.infra.ledger import windows as w

if TYPE_CHECKING:
    from offload.infra.ledger.db import Conn, Row
    from offload.state import AppState

PAGE_TOKENS = 2000  # a results page stays near this many tokens, whatever `limit` is
MIN_ITEM_TOKENS = 24
WRITE_CHUNK = 1000
LIST_MAX = 10  # batch_status() with no id: at most this many lines, ~70 characters each


def age(created: str, now: datetime) -> str:
    secs = max(0, int((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"


async def _describe(conn: Conn, row: Row, now: datetime) -> tuple[str, dict[str, Any]]:
    bid = str(row["id"])
    counts = await store.counts(conn, bid)
    parts = await store.parts(conn, bid)
    cost = await store.cost_so_far(conn, bid)
    pending = counts.pop("pending", 0)
    done_txt = ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items()))
    unknown = [p for p in parts if p["state"] == "unknown"]
    failed = [p for p in parts if p["state"] == "failed"]
    expires = max((str(p["expires_at"]) for p in parts if p["expires_at"]), default=None)
    rounds = await store.rounds(conn, bid)
    if row["state"] == "done":
        phase = f"finished ({done_txt})"
    elif unknown:
        phase = f"{pending:,} waiting; {len(unknown)} part(s) interrupted during submission"
    else:
        phase = f"{pending:,} in progress" + (f", {done_txt}" if done_txt else "")
    text = (
        f"{bid}: {int(row['request_count']):,} requests on {row['model']}, {phase}; "
        f"cost so far {fmt_usd(cost)} (estimate ~{fmt_usd(int(row['typical_pusd']))}); "
        f"age {age(str(row['created_at']), now)}"
    )
    if len(rounds) > 1:
        # Items whose answers failed their check were re-asked a tier up, each round a batch of its own.
        text += "; re-asked: " + ", ".join(f"{int(r['request_count']):,} on {r['tier']}" for r in rounds[1:])
    if row["state"] != "done" and pending and not unknown:
        text += f"; ETA unknown, by {expires[:16].replace('T', ' ')} UTC at the latest" if expires else ""
    for p in unknown:
        text += (
            f". Part {int(p['part']) + 1} ({int(p['request_count']):,} requests) was being sent when the server "
            f"stopped (at {str(p['submitted_at'])[:19]}); it may or may not exist at the API. Check the Console's "
            f"batch list; if it is not there, batch_submit(retry_failed='{bid}') resends those requests"
        )
    for p in failed:
        text += f". Part {int(p['part']) + 1} was refused by the API: {p['error']}"
    if row["state"] == "done":
        text += f". Read them with batch_results('{bid}')"
    data = {
        "batch_id": bid,
        "state": "done" if row["state"] == "done" else ("needs_attention" if unknown else "in_progress"),
        "requests": int(row["request_count"]),
        "pending": pending,
        "counts": counts,
        "cost_usd": usd_json(cost),
        "estimated_cost_usd": usd_json(int(row["typical_pusd"])),
        "model": row["model"],
        "created_at": row["created_at"],
        "expires_at": expires,
        "api_batches": [p["api_batch_id"] for p in parts if p["api_batch_id"]],
        "failed_parts": len(failed),
        "rounds": [{"tier": r["tier"], "requests": int(r["request_count"]), "state": r["state"]} for r in rounds],
    }
    return text, data


async def status(state: AppState, session: str, batch_id: str | None) -> ToolOutput:
    conn, now = state.ledger.conn, w.utcnow()
    if batch_id is not None:
        row = await _row(conn, batch_id)
        text, data = await _describe(conn, row, now)
        return ToolOutput(text, data)
    rows = await store.list_batches(conn, include_done=False, owner=current_owner())
    if not rows:
        return ToolOutput("no open batches", {"batches": []})
    texts, datas = [], []
    for r in rows[:LIST_MAX]:
        full = await store.batch_row(conn, str(r["id"]), current_owner())
        assert full is not None
        t, d = await _describe(conn, full, now)
        # One short line per batch; the full story (ETA, interrupted parts) only where it needs action.
        texts.append(t if d["state"] == "needs_attention" or d["failed_parts"] else _brief(d, now))
        datas.append(d)
    if len(rows) > LIST_MAX:
        texts.append(f"(+{len(rows) - LIST_MAX} more; batch_status(batch_id=...) for one)")
    return ToolOutput("\n".join(texts), {"batches": datas})


def _brief(d: dict[str, Any], now: datetime) -> str:
    settled = d["requests"] - d["pending"]
    return (
        f"{d['batch_id']}: {settled:,}/{d['requests']:,} settled on {str(d['model']).removeprefix('claude-')}, "
        f"cost {fmt_usd(usd_to_pusd(d['cost_usd']))} of ~{fmt_usd(usd_to_pusd(d['estimated_cost_usd']))}, "
        f"age {age(str(d['created_at']), now)}"
    )


async def _row(conn: Conn, batch_id: str) -> Row:
    row = await store.batch_row(conn, batch_id, current_owner())
    if row is None:
        raise InputError(f"no batch {batch_id!r}; batch_status() with no id lists the open ones")
    return row


def _shorten(text: str, tokens: int) -> tuple[str, bool]:
    if approx_tokens(text) <= tokens:
        return text, False
    keep = max(0, tokens * 4 - 1)
    return text[:keep] + "…", True


async def results(
    state: AppState, session: str, batch_id: str, offset: int, limit: int, write_to: str | None
) -> ToolOutput:
    conn = state.ledger.conn
    row = await _row(conn, batch_id)
    if write_to is not None:
        return await _write_all(state, row, write_to)
    page = await store.items_page(conn, batch_id, offset, limit)
    total = int(row["request_count"])
    if not page:
        raise InputError(f"offset {offset} is past the end of batch {batch_id} ({total:,} requests)")
    settled = [r for r in page if store.final_status(r) != "pending"]
    waiting = len(page) - len(settled)
    end = offset + len(page)
    if not settled:
        # A page of "(pending): pending" lines tells the host nothing and costs it ~10 tokens each.
        done = total - (await store.counts(conn, batch_id)).get("pending", 0)
        text = (
            f"{batch_id}: results {offset}-{end - 1} are not in yet ({done:,} of {total:,} settled); "
            f"batch_status('{batch_id}') shows progress"
        )
        return ToolOutput(text, {"batch_id": batch_id, "offset": offset, "items": [], "pending": waiting})
    per_item = max(MIN_ITEM_TOKENS, PAGE_TOKENS // len(settled))
    lines, items, cut = [], [], 0
    for r in settled:
        kind = store.final_status(r)
        body = r["text"] if kind == "succeeded" else _why(r, kind)
        short, trimmed = _shorten(str(body or ""), per_item)
        cut += trimmed
        label, _ = _shorten(str(r["label"]), 12)
        # The call_id lets the host redo one answer it judges wrong: routed_complete(redo_of=...).
        lines.append(f"[{r['idx']}] {label} ({kind}{', ' + r['call_id'] if r['call_id'] else ''}): {short}")
        item = {"index": r["idx"], "label": r["label"], "status": kind, "text": short, "truncated": trimmed}
        items.append({**item, "tier": r["tier"], "call_id": r["call_id"]})
    head = f"{batch_id} results {offset}-{end - 1} of {total:,}"
    if waiting:
        head += f"; {waiting} of these not in yet (batch_status('{batch_id}') shows progress)"
    if cut:
        head += f"; {cut} shortened to fit (write_to='results.jsonl' gets full text)"
    if end < total:
        head += f"; next: offset={end}"
    data = {"batch_id": batch_id, "offset": offset, "items": items, "pending": waiting}
    return ToolOutput(head + "\n" + "\n".join(lines), data)


def _why(r: Any, kind: str) -> str:
    """Why an item has no answer that stands: the API's error, or the check its last answer failed."""
    if kind != "failed":
        return str(r["error"] or kind)
    why = f"check failed on {r['tier']}: {r['failed_check']}"
    return f"{why} ({r['error']}); answer: {r['text'] or ''}" if r["error"] else f"{why}; answer: {r['text'] or ''}"


# Files a host agent reads as its own instructions: model output must never land there.
_HOST_FILES = frozenset({"claude.md", "claude.local.md", "agents.md"})
_HOST_DIRS = frozenset({".claude"})


def _target(path: str, roots: tuple[Path, ...]) -> Path:
    if not roots:
        raise PathRefusedError("no allowed roots are configured; add a directory to OFFLOAD_ROOTS")
    if "\x00" in path:
        raise PathRefusedError(f"write_to={path[:80]!r} contains a NUL character; send a plain file name")
    raw = Path(path).expanduser()
    base = raw if raw.is_absolute() else roots[0] / raw
    if base.suffix.lower() not in (".jsonl", ".md"):
        raise InputError(f"write_to={path!r}: use a .jsonl or .md file name")
    try:
        parent = base.parent.resolve()
    except (OSError, RuntimeError) as exc:  # a loop of symlinks, a name too long
        raise PathRefusedError(f"write_to={path[:80]!r}: cannot use this path ({exc}); send another") from None
    if base.name.lower() in _HOST_FILES or _HOST_DIRS & {part.lower() for part in (*parent.parts, *base.parts)}:
        raise PathRefusedError(
            f"write_to={path!r}: CLAUDE.md, AGENTS.md and .claude/ hold a host's instructions; offload does not "
            "write model output there. Send another file name, e.g. results.md"
        )
    real_roots = [r.expanduser().resolve() for r in roots]
    if not any(parent == r or parent.is_relative_to(r) for r in real_roots):
        raise PathRefusedError(
            f"write_to={path!r} is outside the allowed roots {', '.join(map(str, real_roots))}; send a path inside them"
        )
    if not parent.is_dir():
        raise PathRefusedError(f"write_to={path!r}: directory {parent} does not exist; create it or pick another")
    return parent / base.name


async def _write_all(state: AppState, row: Row, path: str) -> ToolOutput:
    target = _target(path, state.settings.roots)
    bid, md = str(row["id"]), target.suffix.lower() == ".md"
    counts: dict[str, int] = {}
    # A temp file renamed over the name: a symlink or hard link planted there is replaced, not
    # written through, and only an earlier results file may be replaced (files.atomic_writer).
    with files.atomic_writer(target, state.settings.roots, may_replace=_is_results_file) as fh:
        if md:
            fh.write(f"{_MD_MARK}{bid} -->\n# Batch {bid} ({row['model']})\n\n")
        offset = 0
        while True:
            page = await store.items_page(state.ledger.conn, bid, offset, WRITE_CHUNK)
            if not page:
                break
            for r in page:
                kind = store.final_status(r)
                counts[kind] = counts.get(kind, 0) + 1
                fh.write(_md(r, kind) if md else _jsonl(r, kind))
            offset += len(page)
        size = fh.tell()
    summary = ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items()))
    return ToolOutput(
        f"wrote {offset:,} results of {bid} ({summary}) to {target} ({size:,} bytes)",
        {"batch_id": bid, "path": str(target), "bytes": size, "count": offset, "counts": counts},
    )


_MD_MARK = "<!-- written by offload batch_results: "
_JSONL_KEYS = {"index", "label", "status", "text", "stop_reason", "error", "cost_usd", "tier", "call_id"}
_OLD_JSONL_KEYS = _JSONL_KEYS - {"tier", "call_id"}  # written before follow-up rounds


def _is_results_file(head: bytes) -> bool:
    """Whether an existing file starts like one `batch_results(write_to=...)` wrote.

    Markdown needs offload's marker line: a user's own notes may well start with "# Batch ".
    """
    if head.startswith(_MD_MARK.encode()):
        return True
    first = head.split(b"\n", 1)[0]
    try:
        rec = json.loads(first)
    except ValueError:
        return False
    return isinstance(rec, dict) and set(rec) in (_JSONL_KEYS, _OLD_JSONL_KEYS)


def _jsonl(r: Any, kind: str) -> str:
    rec = {
        "index": r["idx"],
        "label": r["label"],
        "status": kind,
        "text": r["text"],
        "stop_reason": r["stop_reason"],
        "error": _why(r, kind) if kind not in ("succeeded", "pending") else None,
        "cost_usd": usd_json(int(r["cost_pusd"])) if r["cost_pusd"] is not None else None,
        "tier": r["tier"],
        "call_id": r["call_id"],
    }
    return json.dumps(rec, ensure_ascii=False) + "\n"


def _md(r: Any, kind: str) -> str:
    body = r["text"] if kind == "succeeded" else f"_{kind}_: {_why(r, kind) if kind != 'pending' else ''}"
    return f"## {r['idx']}. {r['label']}\n\n{body}\n\n"
