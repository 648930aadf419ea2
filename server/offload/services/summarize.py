"""`summarize_context`: bulky text or files → a summary of ~target_tokens, on the cheap tier.

Inputs larger than one call are split into balanced chunks (paragraph/line boundaries) and
summarized in parallel under one byte-identical system prompt — instructions, focus and `keep`
live there, never anything chunk-specific, so once a `max_tokens: 0` pre-warm has written it
every chunk call reads it from the cache. Several chunk summaries are merged by one more call
under the same system prompt.
Then identifiers the reader will act on (paths, error codes, numbers with units, URLs, `keep`,
stated constraints) are checked against the input and any the model dropped are appended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from offload.core.errors import InputError
from offload.core.money import fmt_usd, usd_json
from offload.core.output import Progress, ToolOutput, no_progress
from offload.core.request import Prompt
from offload.core.text import fmt_tokens
from offload.core.tokens import approx_tokens
from offload.infra import files
from offload.metering.metered import Metered, short_model
from offload.services.context_calls import (
    Tier,
    check_headroom,
    estimate_pusd,
    pick_tier,
    prewarm,
    prompt_tokens,
    run_calls,
    total_usage,
    usage_json,
)
from offload.services.kept_out import noted
from offload.trim import chunking, identifiers

if TYPE_CHECKING:
    from offload.state import AppState

TOOL = "summarize_context"
# Far below every Claude model's context window, and small enough that a cheap model still
# reads the whole chunk attentively; also keeps Haiku under its 100K long-prompt repricing.
MAX_CHUNK_TOKENS = 50_000
MIN_CHUNK_TOKENS = 2_000  # however large the shared prefix, a chunk holds at least this much
MAX_CHUNKS = 100  # 5M tokens of input; the merge input (chunk summaries) then stays < 50k
MIN_PART_SUMMARY = 150


@dataclass(frozen=True)
class SummarizeArgs:
    text: str | None = None
    paths: tuple[str, ...] = ()
    focus: str | None = None
    target_tokens: int = 600
    keep: tuple[str, ...] = ()


_RULES = """\
You condense material for another AI agent that will act on your summary without seeing the \
original. Write only the summary: no preamble, no closing remarks.
Copy these exactly as written in the material, never paraphrased: file paths, error codes and \
messages, exception names, numbers with their units, URLs, names of functions, tests and settings, \
and every stated constraint or decision (sentences with "must", "do not", "never", "decided", \
"constraint:") word for word.
Prefer what the reader needs to act: what failed, where, why, what was decided, what is still open. \
Drop repetition, boilerplate and pleasantries. Do not add facts that are not in the material.
Material may come in parts headed "=== name ===": say which file a fact comes from when it matters.
When given several partial summaries of one material, merge them into one: remove overlap and keep \
every verbatim item any of them kept."""


def instructions(focus: str | None, keep: tuple[str, ...]) -> str:
    """The shared system prompt: identical for every call of one job, so it is cached once."""
    parts = [_RULES]
    if focus and focus.strip():
        parts.append(f"Focus of the summary: {focus.strip()}")
    if keep:
        items = "\n".join(f"- {k}" for k in keep)
        parts.append(f"These strings must appear verbatim in the summary whenever the material has them:\n{items}")
    return "\n\n".join(parts)


def chunk_prompt(chunk: str, index: int, count: int, target: int) -> str:
    where = f"Part {index} of {count} of the material" if count > 1 else "The material"
    return f"{where}:\n<material>\n{chunk}\n</material>\nSummarize this in at most about {target} tokens."


def merge_prompt(summaries: list[str], target: int) -> str:
    body = "\n".join(f'<summary part="{i}">\n{s.strip()}\n</summary>' for i, s in enumerate(summaries, 1))
    return (
        f"Partial summaries of one material, in order:\n{body}\n"
        f"Merge these partial summaries into one summary of about {target} tokens."
    )


def part_target(target: int, chunks: int) -> int:
    """Per-chunk summary length: the merge gets about twice the final length to choose from."""
    if chunks <= 1:
        return target
    return min(target, max(MIN_PART_SUMMARY, math.ceil(2 * target / chunks)))


def out_cap(target: int, tier_cap: int) -> int:
    # Room above the target so a slightly long summary is not cut off mid-sentence.
    return min(tier_cap, 2 * target + 200)


def _documents(state: AppState, args: SummarizeArgs) -> list[tuple[str | None, str]]:
    docs: list[tuple[str | None, str]] = []
    if args.text is not None and args.text.strip():
        docs.append((None, args.text))
    if args.paths:
        for path, text in files.read_many(list(args.paths), state.settings):
            docs.append((files.shown(path, state.settings.roots), text))
    if not docs:
        raise InputError(
            "nothing to summarize: send `text` (the material itself) or `paths` (files or globs under the "
            "allowed roots, e.g. ['logs/*.log']); both were empty"
        )
    return docs


async def summarize_context(
    state: AppState, session: str, args: SummarizeArgs, *, progress: Progress = no_progress
) -> ToolOutput:
    if args.target_tokens < 1:
        raise InputError(f"target_tokens={args.target_tokens} must be positive; send e.g. 600")
    docs = _documents(state, args)
    source = "\n\n".join(text for _, text in docs)
    tokens_in = sum(approx_tokens(text) for _, text in docs)
    labels = [label for label, _ in docs if label is not None]
    if tokens_in <= args.target_tokens:
        # Already as short as the summary would be: a model call could only lose detail.
        text = chunking.split(docs, max(tokens_in, 1))[0] if labels else source
        data = _data(None, [], 0, tokens_in, approx_tokens(text), labels, identifiers.Restored("", (), 0))
        return await noted(
            state, session, TOOL, ToolOutput(f"{text}\n[not summarized: input already within target_tokens · $0]", data)
        )

    system = instructions(args.focus, args.keep)
    chunk_limit = max(MIN_CHUNK_TOKENS, MAX_CHUNK_TOKENS - approx_tokens(system))
    tier = pick_tier(state, "summarize", min(tokens_in, chunk_limit) + approx_tokens(system))
    chunks = await anyio.to_thread.run_sync(chunking.split, docs, chunk_limit)
    if len(chunks) > MAX_CHUNKS:
        raise InputError(
            f"the material is about {tokens_in:,} tokens, over {MAX_CHUNKS} chunks of {chunk_limit:,}; "
            "send fewer or smaller files, or trim_result them first"
        )
    n = len(chunks)
    part = part_target(args.target_tokens, n)
    part_cap = out_cap(part, tier.max_tokens)
    prompts = [Prompt(prompt=chunk_prompt(c, i, n, part), system=system) for i, c in enumerate(chunks, 1)]
    planned = [(prompt_tokens(p), part_cap) for p in prompts]
    if n > 1:
        planned.append((approx_tokens(system) + n * part, out_cap(args.target_tokens, tier.max_tokens)))
    estimate = estimate_pusd(state, tier, planned)
    await check_headroom(state, session, estimate, f"summarizing {tokens_in:,} tokens in {n} chunk(s)")

    steps = n + (1 if n > 1 else 0)
    await progress(0, steps, f"summarizing {n} chunk(s) on {short_model(tier.model)}")
    # Extraction is linear but takes seconds on megabytes: it runs in a worker thread while
    # the model calls are in flight, so it neither blocks the event loop nor adds latency.
    found: list[list[identifiers.Identifier]] = []

    async def extract() -> None:
        found.append(await anyio.to_thread.run_sync(identifiers.extract, source, args.keep))

    failed: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(extract)
        try:
            summary, results, merged = await _model_calls(
                state, session, tier, system, prompts, part_cap, args, progress
            )
        except Exception as exc:  # raised as itself below, not wrapped in an ExceptionGroup
            failed.append(exc)
    if failed:
        raise failed[0]
    restored = await anyio.to_thread.run_sync(lambda: identifiers.restore(identifiers.missing(found[0], summary)))
    text = f"{summary}\n\n{restored.text}" if restored.text else summary
    calls = [*results, *merged]
    merges = sum(1 for c in merged if c.outcome != "prewarm")
    data = _data(tier, calls, n, tokens_in, approx_tokens(text), labels, restored)
    footer = _footer(tier, calls, n, merges, tokens_in, approx_tokens(text), restored)
    return await noted(state, session, TOOL, ToolOutput(f"{text}\n{footer}", data))


async def _model_calls(
    state: AppState,
    session: str,
    tier: Tier,
    system: str,
    prompts: list[Prompt],
    part_cap: int,
    args: SummarizeArgs,
    progress: Progress,
) -> tuple[str, list[Metered], list[Metered]]:
    """(summary, chunk calls, merge and pre-warm calls): chunk summaries, then one merge when there are several."""
    n = len(prompts)
    steps = n + (1 if n > 1 else 0)
    chunk_calls = [(p, part_cap) for p in prompts]
    warm = await prewarm(state, session, tool=TOOL, tier=tier, calls=chunk_calls)
    results = await run_calls(
        state,
        session,
        tool=TOOL,
        tier=tier,
        calls=chunk_calls,
        progress=progress,
        total_steps=steps,
        label="chunk",
    )
    if n == 1:
        return results[0].completion.text.strip(), results, warm
    merge = Prompt(prompt=merge_prompt([r.completion.text for r in results], args.target_tokens), system=system)
    merged = await run_calls(
        state,
        session,
        tool=TOOL,
        tier=tier,
        calls=[(merge, out_cap(args.target_tokens, tier.max_tokens))],
        progress=progress,
        done_before=n,
        total_steps=steps,
        label="merge",
    )
    return merged[0].completion.text.strip(), results, [*warm, *merged]


def _footer(
    tier: Tier,
    calls: list[Metered],
    chunks: int,
    merges: int,
    tokens_in: int,
    tokens_out: int,
    restored: identifiers.Restored,
) -> str:
    usage = total_usage(calls)
    cost = sum(c.cost_pusd for c in calls)
    parts = [
        short_model(tier.model),
        fmt_usd(cost),
        f"{chunks} chunk call{'s' if chunks != 1 else ''}" + (" + merge" if merges else ""),
        f"cached {fmt_tokens(usage.cache_read)}",
        f"{fmt_tokens(tokens_in)} → {fmt_tokens(tokens_out)} tokens",
    ]
    if restored.restored:
        parts.append(f"{len(restored.restored)} kept verbatim")
    return "[" + " · ".join(parts) + "]"


def _data(
    tier: Tier | None,
    calls: list[Metered],
    chunks: int,
    tokens_in: int,
    tokens_out: int,
    files: list[str],
    restored: identifiers.Restored,
) -> dict[str, object]:
    usage = total_usage(calls)
    return {
        "model": tier.model if tier else None,
        "tier": tier.name if tier else None,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "chunk_calls": chunks,
        "calls": len(calls),  # every API call, a cache pre-warm included
        "cost_usd": usd_json(sum(c.cost_pusd for c in calls)),
        "usage": usage_json(usage),
        "cache_read_tokens": usage.cache_read,
        "truncated_calls": sum(1 for c in calls if c.completion.stop_reason == "max_tokens" and c.outcome != "prewarm"),
        "kept_verbatim": [i.text for i in restored.restored],
        "identifiers_not_listed": restored.omitted,
        "files": files,
    }


__all__ = ["MAX_CHUNK_TOKENS", "SummarizeArgs", "instructions", "summarize_context"]
