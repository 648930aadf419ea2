"""`trim_result`: bulky content → the slice that matters, locally and free unless a query needs a model.

The content (sent, read from a path, or loaded by handle) is kept in the ledger under a handle
so the host can ask for another slice without resending it. Trimming is deterministic; only a
`query` the trimmer could not answer goes to the cheap tier, and the result then says what
that cost.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from offload.core.errors import InputError
from offload.core.money import fmt_usd, usd_json
from offload.core.output import ToolOutput
from offload.core.request import Prompt
from offload.core.tenancy import current_owner
from offload.core.text import clip, fmt_tokens
from offload.core.tokens import approx_tokens
from offload.infra import files
from offload.infra.ledger import handles
from offload.infra.ledger.context import record_in
from offload.metering.metered import Metered, short_model
from offload.services.context_calls import (
    check_headroom,
    estimate_pusd,
    pick_tier,
    prewarm,
    prompt_tokens,
    run_calls,
    usage_json,
)
from offload.services.context_calls import total_usage as _total_usage
from offload.services.kept_out import noted
from offload.trim import chunking
from offload.trim.content import TrimResult, hard_cut, trim
from offload.trim.detect import KINDS
from offload.trim.query import parse_query

if TYPE_CHECKING:
    from offload.state import AppState

TOOL = "trim_result"
QUERY_CHUNK_TOKENS = 50_000
MAX_QUERY_CHUNKS = 4  # ~200k tokens read at most (about $0.02 on Haiku 5.5) per query fallback
THREAD_OVER_CHARS = 64_000  # trim bigger inputs in a worker thread: the event loop is shared
MAX_REMOVED_CHARS = 160


@dataclass(frozen=True)
class TrimArgs:
    content: str | None = None
    path: str | None = None
    handle: str | None = None
    fields: str | Sequence[str] | None = None
    query: str | None = None
    max_tokens: int = 800


_SOURCES = "content (the text itself), path (a file under the allowed roots) or handle (from an earlier trim_result)"


async def _load(state: AppState, args: TrimArgs) -> tuple[str, str | None]:
    """(content, known kind) from exactly one of content / path / handle."""
    given = [name for name in ("content", "path", "handle") if getattr(args, name) is not None]
    if not given:
        raise InputError(f"nothing to trim: send one of {_SOURCES}")
    if len(given) > 1:
        raise InputError(
            f"send only one of content, path or handle; got {' and '.join(given)} "
            "(to reslice an earlier result, send just its handle with new fields/query/max_tokens)"
        )
    if args.handle is not None:
        kind = await handles.kind_of(state.ledger, args.handle, owner=current_owner())
        return await handles.load(state.ledger, args.handle, owner=current_owner()), kind if kind in KINDS else None
    if args.path is not None:
        settings = state.settings
        found = files.resolve([args.path], settings.roots)
        if len(found) != 1:
            raise InputError(
                f"path {args.path!r} matches {len(found)} files; trim_result reads one file — "
                "send one exact path (or use summarize_context for several files)"
            )
        read = functools.partial(files.read_text, found[0], max_bytes=settings.max_file_bytes, roots=settings.roots)
        # A small file is read in less time than a hop to a worker thread and back would take.
        return (read() if _size(found[0]) <= THREAD_OVER_CHARS else await anyio.to_thread.run_sync(read)), None
    assert args.content is not None
    if not args.content.strip():
        raise InputError(f"content is empty; send the text to trim, or instead a {_SOURCES}")
    return args.content, None


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # read_text says what is wrong with it


async def trim_result(state: AppState, session: str, args: TrimArgs) -> ToolOutput:
    content, kind = await _load(state, args)
    run = functools.partial(trim, content, fields=args.fields, query=args.query, max_tokens=args.max_tokens, kind=kind)
    result = await anyio.to_thread.run_sync(run) if len(content) > THREAD_OVER_CHARS else run()
    owner = current_owner()
    if args.query is not None and result.query_answered is False:
        handle = args.handle or await handles.save(state.ledger, content, result.kind, owner=owner)
        return await noted(state, session, TOOL, await _answer_by_model(state, session, args, content, result, handle))
    handle = args.handle or handles.handle_for(content, owner)
    removed = list(result.removed)
    footer = f"[{result.kind} · {fmt_tokens(result.tokens_in)} → {fmt_tokens(result.tokens_out)} tokens"
    footer += f" · removed: {_short(removed)}" if removed else " · nothing removed"
    footer += f" · handle {handle}]"
    out = ToolOutput(f"{result.text}\n{footer}", _data(result, result.tokens_out, removed, handle, []))
    if args.handle is not None:
        return await noted(state, session, TOOL, out)
    # The original and what was kept out of the host's context: one transaction.
    kept_out = record_in(session, TOOL, result.tokens_in, result.tokens_out)
    await handles.save(state.ledger, content, result.kind, owner=owner, also=kept_out)
    return out


def _short(notes: list[str]) -> str:
    return clip("; ".join(notes), MAX_REMOVED_CHARS)


def _data(
    result: TrimResult, tokens_out: int, removed: list[str], handle: str, calls: list[Metered]
) -> dict[str, object]:
    data: dict[str, object] = {
        "kind": result.kind,
        "tokens_in": result.tokens_in,
        "tokens_out": tokens_out,
        "removed": removed,
        "handle": handle,
        "cost_usd": usd_json(sum(c.cost_pusd for c in calls)),
        "query_answered": result.query_answered,
    }
    if calls:
        data["answered_by"] = calls[0].completion.model
        data["calls"] = len(calls)
        data["usage"] = usage_json(_total_usage(calls))
    return data


def _extract_system(query: str) -> str:
    # Same text for every chunk call of one query: a cacheable shared prefix.
    return (
        "You extract from material only what answers a question, for another AI agent that cannot see "
        "the material. Quote values, names, identifiers and lines verbatim; add no commentary. "
        "If the material holds nothing that answers the question, reply exactly NONE.\n\n"
        f"Question: {query}"
    )


def _pick_chunks(chunks: list[str], query: str) -> tuple[list[str], int]:
    """At most MAX_QUERY_CHUNKS chunks, the ones mentioning the query's terms most, in order."""
    if len(chunks) <= MAX_QUERY_CHUNKS:
        return chunks, 0
    q = parse_query(query)
    scores = [q.score(c) if q else 0 for c in chunks]
    best = sorted(range(len(chunks)), key=lambda i: (-scores[i], i))[:MAX_QUERY_CHUNKS]
    return [chunks[i] for i in sorted(best)], len(chunks) - MAX_QUERY_CHUNKS


async def _answer_by_model(
    state: AppState, session: str, args: TrimArgs, content: str, result: TrimResult, handle: str
) -> ToolOutput:
    assert args.query is not None
    system = _extract_system(args.query)
    chunks, skipped = _pick_chunks(chunking.split([(None, content)], QUERY_CHUNK_TOKENS), args.query)
    tier = pick_tier(state, "trim", min(result.tokens_in, QUERY_CHUNK_TOKENS) + approx_tokens(system))
    per_call = min(tier.max_tokens, max(100, args.max_tokens // len(chunks)))
    prompts = [
        Prompt(prompt=f"<material>\n{c}\n</material>\nExtract what answers the question.", system=system)
        for c in chunks
    ]
    await check_headroom(
        state, session, estimate_pusd(state, tier, [(prompt_tokens(p), per_call) for p in prompts]), "this query"
    )
    parts = [(p, per_call) for p in prompts]
    warm = await prewarm(state, session, tool=TOOL, tier=tier, calls=parts)
    answered = await run_calls(state, session, tool=TOOL, tier=tier, calls=parts, label="query part")
    answers = [c.completion.text.strip() for c in answered]
    calls = [*warm, *answered]
    found = [a for a in answers if a and not (len(a) < 20 and a.upper().startswith("NONE"))]
    answer = "\n\n".join(found) if found else "Nothing in the content answers the query."
    answer = hard_cut(answer, args.max_tokens * 4)
    cost = sum(c.cost_pusd for c in calls)
    tokens_out = approx_tokens(answer)
    removed = ["deterministic trim could not answer the query; answer extracted by the model"]
    if skipped:
        removed.append(f"{skipped} of {len(chunks) + skipped} parts not searched (fewest query-term hits)")
    n = len(calls)
    footer = (
        f"[{result.kind} · {fmt_tokens(result.tokens_in)} → {fmt_tokens(tokens_out)} tokens · query answered by "
        f"{short_model(answered[0].completion.model)} for {fmt_usd(cost)} ({n} call{'s' if n != 1 else ''})"
        + (f" · {skipped} parts not searched" if skipped else "")
        + f" · handle {handle}]"
    )
    return ToolOutput(f"{answer}\n{footer}", _data(result, tokens_out, removed, handle, calls))


__all__ = ["TrimArgs", "trim_result"]
