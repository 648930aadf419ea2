"""`batch_submit`: validate -> route -> price -> reserve -> persist everything -> create API batches.

Order matters for "nothing lost": the batch, every custom_id -> item mapping and the budget
hold are committed in one transaction BEFORE the first API call. A part is marked
'submitting' just before its create call; if the process dies before the API's answer is
stored, that part becomes 'unknown' (the API may or may not have it). offload never resends
it on its own — that could pay twice — and batch_status tells the user how to decide.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from offload.core.checks import Checks
from offload.core.errors import InputError, UpstreamError
from offload.core.money import fmt_usd, usd_json
from offload.core.output import Progress, ToolOutput, no_progress
from offload.core.request import Prompt
from offload.core.tenancy import current_owner
from offload.infra import files
from offload.infra.claude import BatchBody
from offload.infra.ledger import batches as store
from offload.infra.ledger import budgets, learning
from offload.infra.ledger import windows as w
from offload.metering import placement
from offload.metering.metered import limits_of
from offload.policy import engine
from offload.services.batches import build
from offload.services.batches.build import Shared, Spec, SubmitArgs

if TYPE_CHECKING:
    from offload.state import AppState

log = logging.getLogger("offload.services.batches")
FIRST_POLL_S = 0.5
MAX_FILES = 10_000


async def submit(state: AppState, session: str, args: SubmitArgs, *, progress: Progress = no_progress) -> ToolOutput:
    mode = build.mode_of(args)
    if mode == "retry":
        assert args.retry_failed is not None
        shared, specs, retry_of = await _retry_specs(state, args.retry_failed)
        tier, quality = await _tier_of(state, args.retry_failed)
    else:
        # Building 10^5 requests takes seconds of CPU: in a worker thread, so other calls are served.
        shared, specs, tier, task = await anyio.to_thread.run_sync(_fresh, state, args, mode)
        retry_of, quality = None, quality_json(replace(args, task=task))
    if not specs:
        raise InputError("there is nothing to submit: the list of requests, items or files is empty")
    await progress(0, 3, f"pricing {len(specs):,} requests")
    return await _persist_and_send(
        state, session, shared, specs, tier=tier, retry_of=retry_of, quality=quality, progress=progress
    )


def quality_json(args: SubmitArgs) -> str:
    """What the collector needs to judge the answers and route a follow-up round (batches.quality)."""
    keys = ("task", "difficulty", "max_tokens", "must_match", "response_schema")
    return json.dumps({k: getattr(args, k) for k in keys if getattr(args, k) is not None}, sort_keys=True)


def _fresh(state: AppState, args: SubmitArgs, mode: str) -> tuple[Shared, list[Spec], str, str | None]:
    """The batch's shared part, its requests, its tier and its task (the one given, or the one its
    template's first word names: one template for every item)."""
    # A bad regex or schema is refused before anything is priced or sent.
    checks = Checks.build(args.response_schema, args.must_match)
    prefix: str | None = None
    if mode == "requests":
        _, specs = build.from_requests(args.requests, args.system)
    elif mode == "items":
        assert args.template is not None
        prefix, specs = build.from_items(args.template, args.items)
    else:
        assert args.template is not None
        prefix, specs = build.from_files(args.template, _read_files(state, args.files))
    policy = state.policy
    sample = specs[0].body if specs else ""
    upper = max(
        (
            build.input_upper_bound(Shared("", 1, args.system, prefix, instruction=checks.instruction()), s)
            for s in specs
        ),
        default=0,
    )
    # One template for every item: the task its first word names is every item's.
    task = args.task
    if args.template is not None:
        task = engine.call_task(
            policy,
            args.task,
            args.template,
            prompt_tokens=upper,
            difficulty=args.difficulty,
            forced_tier=args.tier,
            prompt_text=sample,
        )
    # Batches are budgeted as a whole when reserving; the per-call downgrade of routed_complete
    # does not apply, so the decision is taken without headroom.
    decision = engine.decide(
        policy,
        engine.RouteRequest(
            prompt_tokens=upper,
            task=task,
            difficulty=args.difficulty,
            forced_tier=args.tier,
            prompt_text=sample,
            max_tokens=args.max_tokens,
        ),
    )
    if decision.rule == "default_tier" and policy.batch.default_tier is not None:
        decision = replace(decision, tier=policy.batch.default_tier, rule="batch.default_tier")
        decision = replace(decision, max_tokens=policy.max_tokens_for(decision.tier, args.max_tokens))
    model = policy.tiers[decision.tier]
    common = _shared_prompt(args.system, prefix or None, checks.instruction())
    shared = Shared(
        model=model,
        max_tokens=decision.max_tokens,
        system=args.system,
        prefix=prefix or None,
        ttl=placement.batch_ttl(state, model, common, len(specs)) or "",
        min_cacheable=state.prices.min_cacheable(model),
        instruction=checks.instruction(),
    )
    return shared, specs, decision.tier, task


def _read_files(state: AppState, patterns: tuple[str, ...]) -> list[tuple[str, str]]:
    settings = state.settings
    found = files.read_many(list(patterns), settings, max_files=MAX_FILES)
    return [(files.shown(p, settings.roots), text) for p, text in found]


async def _retry_specs(state: AppState, batch_id: str) -> tuple[Shared, list[Spec], str]:
    conn = state.ledger.conn
    row = await store.batch_row(conn, batch_id, current_owner())
    if row is None:
        raise InputError(f"retry_failed={batch_id!r}: no such batch; see batch_status for batch ids")
    if str(row["shared"]) == "{}":
        raise InputError(
            f"batch {batch_id} settled more than {store.PAYLOAD_DAYS} days ago and its prompts were forgotten; "
            "submit the work again with batch_submit"
        )
    open_parts = [p for p in await store.parts(conn, batch_id) if p["state"] in ("pending", "in_progress", "ended")]
    if open_parts:
        raise InputError(
            f"batch {batch_id} is still running ({len(open_parts)} part(s) in flight); "
            "retry its failed items once batch_status shows it finished"
        )
    rows = await store.retry_items(conn, batch_id)
    if not rows:
        raise InputError(f"batch {batch_id} has no failed, expired or canceled items to retry")
    specs = [Spec(label=str(r["label"]), body=str(r["body"]), system=r["system"]) for r in rows]
    return Shared.from_json(str(row["shared"])), specs, batch_id


async def _tier_of(state: AppState, batch_id: str) -> tuple[str, str]:
    row = await store.batch_row(state.ledger.conn, batch_id, current_owner())
    assert row is not None
    return str(row["tier"]), str(row["quality"])


async def _persist_and_send(
    state: AppState,
    session: str,
    shared: Shared,
    specs: list[Spec],
    *,
    tier: str,
    retry_of: str | None,
    quality: str,
    progress: Progress,
) -> ToolOutput:
    policy = state.policy
    # The estimate uses how long this model's answers have been, when the ledger knows.
    observed_out = await learning.typical_output(state.ledger.conn, shared.model)
    part_of, part_counts, part_bytes, worst, typical, sync = await anyio.to_thread.run_sync(
        _priced, state, shared, specs, observed_out
    )
    total_worst = sum(worst)
    state.claude()  # fail on a missing key before holding any money
    reservation = await budgets.reserve(state.ledger, session, total_worst, limits_of(policy))
    batch_id = store.new_batch_id()
    try:
        await store.create(
            state.ledger,
            store.NewBatch(
                id=batch_id,
                session_id=session,
                policy=policy.name,
                tier=tier,
                model=shared.model,
                baseline_model=policy.baseline,
                request_count=len(specs),
                worst_pusd=total_worst,
                typical_pusd=typical,
                sync_pusd=sync,
                shared=shared.to_json(),
                retry_of=retry_of,
                owner=current_owner(),
                quality=quality,
            ),
            ((i, part_of[i], s.label, s.body, s.system, worst[i]) for i, s in enumerate(specs)),
            part_counts,
            reservation,
        )
    except BaseException:
        # Shielded: a host's cancel lands here too, and an unshielded release in a cancelled scope
        # never ran, leaving the batch's worst case held (a saved batch took the hold over: no-op).
        with anyio.CancelScope(shield=True):
            await budgets.release(state.ledger, reservation)
        raise
    await progress(1, 3, f"saved {batch_id}; creating {len(part_counts)} API batch(es)")
    api_ids, failures = await _send_parts(state, batch_id, shared, part_bytes)
    await progress(3, 3, None)
    return _submitted_output(batch_id, shared, tier, len(specs), api_ids, failures, total_worst, typical, sync)


def _shared_prompt(system: str | None, prefix: str | None, instruction: str | None) -> Prompt:
    """What every request of a batch sends before its own text: what a cache entry would hold."""
    return Prompt(prompt="", system=system, prefix=prefix, instruction=instruction)


def _priced(
    state: AppState, shared: Shared, specs: list[Spec], observed_out: int | None, idxs: list[int] | None = None
) -> tuple[list[int], list[int], list[int], list[int], int, int]:
    """(part of each request, requests per part, each part's create body bytes, worst case per request,
    typical, typical sent one by one). `idxs`: the items' own indexes when they are not 0..n-1 (a
    follow-up round keeps them, and a custom_id's length is part of the body's)."""
    prices = state.prices
    sizes: list[int] = []
    worst: list[int] = []
    typical = sync = 0
    for idx, spec in enumerate(specs):
        sizes.append(build.line_bytes(build.request_line(shared, spec, idxs[idx] if idxs else idx)))
        upper = build.input_upper_bound(shared, spec)
        worst.append(prices.worst_case(shared.model, upper, shared.max_tokens, batch=True))
        guess_in = build.input_typical(shared, spec)
        guess_out = min(shared.max_tokens, observed_out or build.TYPICAL_OUTPUT_TOKENS)
        typical += _typical(state, shared, guess_in, guess_out, batch=True)
        sync += _typical(state, shared, guess_in, guess_out, batch=False)
    part_of = build.split(sizes)
    part_counts = [0] * (part_of[-1] + 1)
    line_sizes: list[list[int]] = [[] for _ in part_counts]
    for p, size in zip(part_of, sizes, strict=True):
        part_counts[p] += 1
        line_sizes[p].append(size)
    part_bytes = [BatchBody.length(s) for s in line_sizes]
    return part_of, part_counts, part_bytes, worst, typical, sync


def _typical(state: AppState, shared: Shared, tokens_in: int, tokens_out: int, *, batch: bool) -> int:
    """A plain-input guess (no cache effects) for the 'typical' figure; reservations use worst cases."""
    rates = state.prices.price(shared.model).rates_for(tokens_in, batch=batch)
    return tokens_in * rates.input + tokens_out * rates.output


async def _send_parts(
    state: AppState, batch_id: str, shared: Shared, part_bytes: list[int]
) -> tuple[list[str], list[str]]:
    api_ids: list[str] = []
    failures: list[str] = []
    client = state.claude()
    target = state.ledger.url or state.ledger.path
    for part in range(len(part_bytes)):
        if not await store.begin_submit(state.ledger, batch_id, part):
            continue
        # Streamed from the ledger in chunks as the body is sent: memory is bounded by a chunk, not the part.
        lines = BatchBody(functools.partial(_part_lines, target, batch_id, part, shared), part_bytes[part])
        try:
            info = await client.batch_create(lines)
        except UpstreamError as exc:
            # A status code means the API answered "no": nothing was created. No status (a
            # timeout, a dropped connection) means it may exist: never resend on a guess.
            definite = exc.status is not None or exc.kind == "not_sent"
            await store.submit_failed(state.ledger, batch_id, part, str(exc), definite=definite)
            failures.append(f"part {part + 1}: {exc}" + ("" if definite else " (it may have been created)"))
            continue
        finally:
            del lines
        await store.submitted(
            state.ledger, batch_id, part, info.id, info.expires_at, w.utcnow() + timedelta(seconds=FIRST_POLL_S)
        )
        api_ids.append(info.id)
    return api_ids, failures


def _part_lines(target: Path | str, batch_id: str, part: int, shared: Shared) -> Iterator[bytes]:
    for idx, body, system in store.part_rows(target, batch_id, part):
        yield build.line_json(build.request_line(shared, Spec("", body, system), idx))


def _part_size(target: Path | str, batch_id: str, part: int, shared: Shared) -> int:
    """A saved part's create body length, read back from the ledger (a round sent after a restart)."""
    return BatchBody.length(len(line) for line in _part_lines(target, batch_id, part, shared))


def _submitted_output(
    batch_id: str,
    shared: Shared,
    tier: str,
    count: int,
    api_ids: list[str],
    failures: list[str],
    worst: int,
    typical: int,
    sync: int,
) -> ToolOutput:
    if not api_ids and failures:
        raise UpstreamError(
            f"batch {batch_id} was saved but the API did not accept it: {'; '.join(failures)}. "
            "Nothing is charged for refused parts; fix the cause and submit again"
        )
    text = (
        f"batch {batch_id}: {count:,} requests on {shared.model} ({tier}) at batch rates; "
        f"typical ~{fmt_usd(typical)} (vs ~{fmt_usd(sync)} sent one by one), at most {fmt_usd(worst)} reserved. "
        f"Results within 24h: batch_status('{batch_id}'), then batch_results('{batch_id}')."
    )
    if len(api_ids) > 1:
        text += f" Split into {len(api_ids)} API batches."
    if failures:
        text += " Problems: " + "; ".join(failures)
    data = {
        "batch_id": batch_id,
        "requests": count,
        "model": shared.model,
        "tier": tier,
        "api_batches": api_ids,
        "estimated_cost_usd": usd_json(typical),
        "max_cost_usd": usd_json(worst),
        "sync_cost_usd": usd_json(sync),
        "problems": failures,
    }
    return ToolOutput(text, data)
