"""`routed_complete`: the cheapest adequate tier, proven by the caller's checks.

decide (policy + budget headroom) → call the chosen tier → check → climb the ladder only
when a check names a trigger the policy escalates on. Every rung is a priced ledger row.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from offload.core.baseline_cache import one_request
from offload.core.checks import Checks, failed_check
from offload.core.errors import BudgetExceededError, InputError, LedgerUnavailableError, UpstreamError
from offload.core.money import fmt_usd, usd_json
from offload.core.output import Progress, ToolOutput, no_progress
from offload.core.recall import new_call_id
from offload.core.request import Prompt, build_params, request_hash
from offload.core.tenancy import current_owner
from offload.core.tokens import request_upper_bound
from offload.infra import files
from offload.infra.claude import Completion, StreamDropped
from offload.infra.ledger import batches as batch_store
from offload.infra.ledger import budgets, learning, records
from offload.infra.ledger.db import Also, WriteConn
from offload.metering.metered import Finalize, Verdict, budget_warnings, footer, leave_note, limits_of, metered_call
from offload.metering.placement import placed_params
from offload.policy import engine
from offload.policy.models import DIFFICULTIES
from offload.services.batches import build
from offload.services.batches.build import Shared, Spec
from offload.services.batches.quality import Quality

if TYPE_CHECKING:
    from offload.state import AppState

TOOL = "routed_complete"
REDO_RUNNING = "running"  # `_Job.redone_as` while a redo of it is under way

CALL_ID_DRAWS = 8  # a clash needs one answer in 2**32 already holding the id: eight in a row never happen

log = logging.getLogger("offload.routed")
T = TypeVar("T")


@dataclass(frozen=True)
class RoutedArgs:
    prompt: str = ""
    system: str | None = None
    context_files: tuple[str, ...] = ()
    task: str | None = None
    difficulty: str | None = None
    tier: str | None = None
    max_tokens: int | None = None
    response_schema: dict[str, Any] | None = None
    must_match: str | None = None
    redo_of: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _Rung:
    tier: str
    model: str
    cost_pusd: int
    outcome: str
    trigger: str | None
    completion: Completion
    request_key: str


@dataclass(frozen=True)
class _Job:
    """A request as first sent, kept in memory so `redo_of` can run it again without the host resending it."""

    session: str
    prompt: Prompt
    checks: Checks
    prompt_text: str
    upper: int
    task: str | None
    difficulty: str | None
    max_tokens: int | None
    family: str
    tier: str = ""  # the tier whose answer the host got
    # The call_id of the redo that replaced this answer (REDO_RUNNING while it runs): one host
    # question gets one better answer, and only that one stands for the host's own call.
    redone_as: str | None = None
    counted: int | None = None  # the API's count of a large prompt (`_counted`), when it was taken

    @property
    def checked(self) -> bool:
        return self.checks.response_schema is not None or self.checks.must_match is not None

    @property
    def size(self) -> int:
        texts = [self.prompt.prompt, self.prompt.system or "", self.prompt.prefix or ""]
        texts += [t for _, t in self.prompt.documents]
        return sum(len(t.encode("utf-8")) for t in texts)


@dataclass
class _Answer:
    """The host's answer's `calls` row (and, for a redo, the verdict on the call it replaces),
    written in the final rung's own record transaction; `_finish` writes what did not get in."""

    call_id: str
    redo_of: str | None = None
    reason: str | None = None  # the host's words about the answer it redoes (kept only where prompts are)
    written: bool = False
    judged: bool = False


@dataclass(frozen=True)
class _Run:
    decision: engine.RouteDecision
    rungs: list[_Rung]  # the rungs that answered
    triaged: str | None
    triage_cost: int
    budget_stop: str | None
    tried: list[_Rung]  # every paid rung, in order: the answered ones and any whose stream broke off
    answer: _Answer
    spent: budgets.Spent | None  # settled spend per scope after the last paid rung, for warnings


async def _batch_job(state: AppState, session: str, call_id: str) -> _Job | None:
    """A batch item's request, rebuilt from the batch's own record (kept there for 29 days anyway),
    so any server process can redo it: no copy of 10^5 prompts in memory, and the answers the
    host got from routed_complete are not pushed out of the recall by a batch's. Results arrive
    hours later, in another session: the batch's owner (its HTTP token, or the local user) may
    redo it from any session, as batch_results shows it to them; nobody else may."""
    row = await batch_store.item_of_call(state.ledger.conn, call_id)
    if row is None or str(row["shared"]) == "{}" or row["owner"] != current_owner():
        return None
    shared = Shared.from_json(str(row["shared"]))
    quality = Quality.of(str(row["quality"]))
    spec = Spec("", str(row["body"]), row["system"])
    prompt = build.prompt_for(shared, spec)
    return _Job(
        session=session,
        prompt=prompt,
        checks=quality.checks,
        prompt_text=prompt.prompt,
        upper=build.input_upper_bound(shared, spec),
        task=quality.task,
        difficulty=quality.difficulty,
        max_tokens=quality.max_tokens,
        family=quality.family,
        tier=str(row["tier"]),
        redone_as=row["redone_as"],
    )


async def routed_complete(
    state: AppState, session: str, args: RoutedArgs, *, progress: Progress = no_progress
) -> ToolOutput:
    with one_request():  # every rung and triage call of it is one request to the baseline model
        return await _routed_complete(state, session, args, progress)


async def _routed_complete(state: AppState, session: str, args: RoutedArgs, progress: Progress) -> ToolOutput:
    if args.redo_of is not None:
        return await _redo(state, session, args, progress)
    if not args.prompt.strip():
        raise InputError(
            "prompt is empty; send the sub-task to run as `prompt`, or redo_of=<call_id> to redo an answer"
        )
    checks = Checks.build(args.response_schema, args.must_match)
    settings = state.settings
    docs = files.read_many(list(args.context_files), settings) if args.context_files else []
    documents = tuple((files.shown(path, settings.roots), text) for path, text in docs)
    prompt = Prompt(prompt=args.prompt, system=args.system, instruction=checks.instruction(), documents=documents)
    upper = request_upper_bound(
        [args.prompt, prompt.system or "", prompt.instruction or "", *(t for _, t in documents)]
    )
    # Counted once, here: the task the prompt names is judged at the size the rules will see.
    counted = await _counted(state, prompt, upper)
    task = engine.call_task(
        state.policy,
        args.task,
        args.prompt,
        prompt_tokens=counted or upper,
        difficulty=args.difficulty,
        forced_tier=args.tier,
    )
    job = _Job(
        session=session,
        prompt=prompt,
        checks=checks,
        prompt_text=args.prompt,
        upper=upper,
        task=task,
        difficulty=args.difficulty,
        max_tokens=args.max_tokens,
        family=engine.family_of(task, args.difficulty),
        counted=counted,
    )
    run = await _route_and_run(state, session, job, _Answer(new_call_id()), forced_tier=args.tier, progress=progress)
    return await _finish(state, session, job, run)


async def _redo(state: AppState, session: str, args: RoutedArgs, progress: Progress) -> ToolOutput:
    call_id = args.redo_of or ""
    given = [n for n in ("system", "task", "difficulty", "tier", "response_schema", "must_match") if getattr(args, n)]
    if args.prompt.strip() or args.context_files or given:
        raise InputError(
            "redo_of re-runs the earlier request as first sent; send only redo_of (and reason), "
            "or drop redo_of to send a new request"
        )
    assert state.recall is not None
    job = state.recall.get(call_id)
    if job is None:
        job = await _batch_job(state, session, call_id)
        if job is not None:
            state.recall.put(call_id, job, job.size)  # from here on claimed like any other answer
    if not isinstance(job, _Job) or job.session != session:
        raise InputError(
            f"redo_of={call_id!r} is unknown or expired (offload keeps a routed_complete request for redo only "
            f"in memory, up to {state.settings.redo_ttl_s // 60} minutes, and a batch item's while its batch is "
            "kept); send the prompt again, with a higher tier= if needed"
        )
    if job.redone_as == REDO_RUNNING:
        raise InputError(
            f"a redo of {call_id} is already running; wait for its answer, and if that is wrong too, "
            "send redo_of=<its call_id>"
        )
    if job.redone_as is not None:
        raise InputError(
            f"{call_id} was already redone as {job.redone_as}; if that answer is wrong too, "
            f"send redo_of={job.redone_as}"
        )
    policy = state.policy
    # The host's words about the answer are text it sent: kept only where prompts are kept.
    reason = args.reason if policy.store_text else None
    up = engine.tier_above(policy, job.tier)
    if up is None:
        await learning.mark_judged(state.ledger, call_id, "rejected", keep_baseline=True, reason=reason)
        raise InputError(
            f"{call_id} was already answered by the top tier ({job.tier}: {policy.tiers.get(job.tier, '?')}); "
            "there is no higher tier to redo it on. Add what the answer missed to the prompt, or split the task"
        )
    # Claimed with no await since the lookup: a concurrent redo of the same call sees the claim.
    claimed = replace(job, redone_as=REDO_RUNNING)
    state.recall.swap(call_id, job, claimed)
    answer = _Answer(new_call_id(), redo_of=call_id, reason=reason)
    recall = state.recall
    waiting = True

    async def report(done: float, total: float | None, message: str | None) -> None:
        if waiting:  # a caller that has gone hears nothing more
            await progress(done, total, message)

    async def redo() -> ToolOutput:
        try:
            run = await _route_and_run(state, session, job, answer, redo_tier=up, progress=report)
        except BaseException:
            recall.swap(call_id, claimed, job)  # nothing better was paid for: the call can be redone again
            raise
        out = await _finish(state, session, job, run)
        recall.swap(call_id, claimed, replace(job, redone_as=str(out.data["call_id"])))
        return out

    # Once claimed, the redo runs where the host's cancel can't cut it off: its rung is paid
    # whatever the host does (metered_call), so the claim must stand until that rung's answer is
    # in the ledger. A repeat of the same redo_of then hears "running", then "redone as", and
    # never pays for the same redo twice.
    try:
        return await state.detached.run(redo)
    finally:
        waiting = False


async def _after_paid(write: Awaitable[T], what: str) -> T | None:
    """Bookkeeping after an answer is paid for: a ledger that can't take it (locked, full) must not
    cost the host the answer, whose cost `metered_call` already recorded or spooled. None then."""
    try:
        return await write
    except LedgerUnavailableError as exc:
        log.warning("%s was not recorded: %s", what, exc)
        leave_note(f"ledger busy or full: {what} was not recorded (the answer and its cost were)")
        return None


async def _learned(
    state: AppState,
    job: _Job,
    request: engine.RouteRequest,
    signals: learning.Signals | None,
    answer_cost: dict[str, int],
) -> engine.RouteRequest:
    policy = state.policy
    learn = policy.learning
    if signals is None or (not learn.enabled and not learn.judged_trials):
        return request
    judges = signals.judges
    if not learn.enabled and not judges:
        return request
    stats = await learning.tier_stats(state.ledger.conn, job.family, learn.window)
    evidence = {t: engine.TierEvidence(s.adequate, s.known) for t, s in stats.items()}
    tier, reason = engine.rule_tier(policy, request), ""
    if learn.enabled:
        # Exploring is worth a worse answer only when its outcome comes back as evidence.
        can_explore = job.checked or judges
        tier, reason = engine.learned_start(policy, tier, evidence, draw=state.rng().random(), can_explore=can_explore)
    if judges and not reason.startswith("exploring"):
        lower, why = engine.judged_start(policy, tier, evidence, answer_cost)
        if why:
            tier, reason = lower, why
    if not reason:
        return request
    return replace(request, learned_tier=tier, learned_reason=reason)


COUNT_OVER_TOKENS = 20_000  # below this the byte bound is close enough and no count is worth a round trip
COUNT_MARGIN = 64  # tokens: a rung's request differs from the counted one only in its model name


async def _counted(state: AppState, prompt: Prompt, upper: int) -> int | None:
    """The real prompt size of a large request, from the API's free count_tokens, cached by content.

    The byte bound counts a token per byte: an 83k-token log reads as 214k tokens, crosses
    `input_tokens_over` thresholds it is nowhere near and makes a budget reserve 2-3x too much.
    """
    if upper < COUNT_OVER_TOKENS:
        return None
    policy = state.policy
    model = policy.tiers[policy.default_tier]
    params = build_params(model, prompt, max_tokens=1, ttl=policy.caching.ttl)
    key = request_hash({k: params[k] for k in ("system", "messages") if k in params})
    known = state.token_counts.get(key)
    if known is None:
        try:
            known = await state.claude().count_tokens(params)
        except UpstreamError:
            return None  # the bound still holds: route and reserve on it
        state.token_counts[key] = known
        while len(state.token_counts) > 1024:
            del state.token_counts[next(iter(state.token_counts))]
    return min(upper, known + COUNT_MARGIN)


async def _reads(state: AppState, session: str, job: _Job) -> tuple[learning.Signals | None, budgets.Headroom | None]:
    """The learning signals and (when the policy downgrades) the budget headroom."""
    signals = await _signals(state, session, job)
    if state.policy.budgets.on_exceed != "downgrade":
        return signals, None
    return signals, await budgets.headroom(state.ledger, session, limits_of(state.policy))


async def _signals(state: AppState, session: str, job: _Job) -> learning.Signals | None:
    """What the learned start and the output cap read from the ledger, in one read (None: neither is on)."""
    learn = state.policy.learning
    if not (learn.enabled or learn.judged_trials or learn.output_cap):
        return None
    label = engine.family_of(job.task, None)
    return await learning.signals(state.ledger.quick, session, label, learn.window, learn.window * 5, learn.min_samples)


def _output_cap(state: AppState, job: _Job, signals: learning.Signals | None) -> int | None:
    """A task's answers have a length: a runaway one (a weak tier rambling into max_tokens) is cut
    at `learning.output_cap` times the longest answer that task had accepted lately (at any stated
    difficulty), or, while the task has fewer than `min_samples` answers, the longest of any task's
    (a wider window): the runaways that cost most come early, before a task has a record of its own."""
    learn = state.policy.learning
    if not learn.output_cap or signals is None or job.max_tokens is not None:
        return None
    answers, longest = signals.answers, signals.longest
    if answers < learn.min_samples:
        answers, longest = signals.any_answers, signals.any_longest
    if answers < learn.min_samples or longest <= 0:
        return None
    return int(longest * learn.output_cap) + 1


async def _route_and_run(
    state: AppState,
    session: str,
    job: _Job,
    answer: _Answer,
    *,
    forced_tier: str | None = None,
    redo_tier: str | None = None,
    progress: Progress,
) -> _Run:
    signals, room = await _reads(state, session, job)
    cap = _output_cap(state, job, signals)
    counted = job.counted if job.counted is not None else await _counted(state, job.prompt, job.upper)
    if counted is not None:
        job = replace(job, upper=counted)
    decision, triaged, triage_cost, cap = await _decide(
        state, session, job, cap, (forced_tier, redo_tier), signals, room
    )
    rungs, tried, budget_stop, spent = await _climb(state, session, job, decision, (cap, counted), answer, progress)
    return _Run(decision, rungs, triaged, triage_cost, budget_stop, tried, answer, spent)


async def _decide(
    state: AppState,
    session: str,
    job: _Job,
    cap: int | None,
    tiers: tuple[str | None, str | None],  # the forced tier, the redo's tier
    signals: learning.Signals | None,
    room: budgets.Headroom | None,
) -> tuple[engine.RouteDecision, str | None, int, int | None]:
    """The route: rules, budget headroom, what was learned, and triage when it could change it;
    and the output cap its first try gets (see `_uncut_if_it_fits`)."""
    policy = state.policy
    worst_by_tier = engine.worst_case_by_tier(policy, job.upper, state.prices.worst_case, job.max_tokens, cap)
    forced_tier, redo_tier = tiers
    headroom = headroom_scope = headroom_detail = None
    if room is not None:
        headroom, headroom_scope, headroom_detail = room.min_pusd, room.tightest, room.detail
    request = engine.RouteRequest(
        prompt_tokens=job.upper,
        task=job.task,
        difficulty=job.difficulty,
        forced_tier=forced_tier,
        prompt_text=job.prompt_text,
        worst_case_pusd=worst_by_tier,
        headroom_pusd=headroom,
        headroom_scope=headroom_scope,
        headroom_detail=headroom_detail,
        max_tokens=job.max_tokens,
        redo_tier=redo_tier,
    )
    if forced_tier is None and redo_tier is None:
        # Two tiers' costs compare at the same answer length, whether or not the top one is cut.
        answer_cost = engine.worst_case_by_tier(
            policy, job.upper, state.prices.worst_case, job.max_tokens, cap, as_sent=False
        )
        request = await _learned(state, job, request, signals, answer_cost)
    decision = engine.decide(policy, request)
    triaged: str | None = None
    triage_cost = 0
    if decision.triage_needed:
        triaged, triage_cost = await _triage(state, session, job.prompt_text)
        if triaged is not None:
            request = replace(request, difficulty=triaged, difficulty_stated=False)
            decision = engine.decide(policy, request)
    decision, cap = _uncut_if_it_fits(state, job, request, decision, cap)
    return decision, triaged, triage_cost, cap


def _uncut_if_it_fits(
    state: AppState, job: _Job, request: engine.RouteRequest, decision: engine.RouteDecision, cap: int | None
) -> tuple[engine.RouteDecision, int | None]:
    """A route downgraded to fit the budget leaves no room for the rung above: a first try cut at the
    output cap could not climb, and the cut answer would be the host's. So it goes uncut when that
    still fits on the same tier."""
    if cap is None or decision.downgraded_from is None:
        return decision, cap
    policy = state.policy
    uncut = engine.worst_case_by_tier(policy, request.prompt_tokens, state.prices.worst_case, job.max_tokens)
    try:
        again = engine.decide(policy, replace(request, worst_case_pusd=uncut))
    except BudgetExceededError:
        return decision, cap
    return (again, None) if again.tier == decision.tier else (decision, cap)


async def _climb(
    state: AppState,
    session: str,
    job: _Job,
    decision: engine.RouteDecision,
    sizes: tuple[int | None, int | None],  # the output cap, the counted prompt tokens
    answer: _Answer,
    progress: Progress,
) -> tuple[list[_Rung], list[_Rung], str | None, budgets.Spent | None]:
    """Run the ladder from the decided tier, one rung up per failed check, until an answer stands."""
    policy = state.policy
    checks = job.checks
    cap, counted = sizes
    ladder = [decision.tier, *decision.ladder]
    rungs: list[_Rung] = []
    tried: list[_Rung] = []
    budget_stop: str | None = None
    spent: budgets.Spent | None = None
    for step, tier in enumerate(ladder):
        model = policy.tiers[tier]
        # Only the first try is cut short: a rung climbing after a runaway answer gets the full length.
        max_tokens = (
            engine.capped_max_tokens(policy, tier, job.max_tokens, cap)
            if step == 0
            else policy.max_tokens_for(tier, job.max_tokens)
        )
        params = await placed_params(state, model, job.prompt, max_tokens=max_tokens)
        last = step == len(ladder) - 1

        def judge(c: Completion, last: bool = last) -> Verdict:
            failed = failed_check(c.text, c.stop_reason, checks)
            climbs = failed is not None and not last and engine.should_escalate(policy, failed)
            outcome = "escalated" if climbs else ("ok" if failed is None else "check_failed")
            return Verdict(outcome, counts_toward_baseline=not climbs, failed_check=failed)

        await progress(step, len(ladder), f"{tier}: {model}")
        try:
            metered = await metered_call(
                state,
                session,
                tool=TOOL,
                tier=tier,
                params=params,
                step=step,
                judge=judge,
                prompt_text=job.prompt_text,
                prompt_tokens=counted,
                # Without a regex or schema the judge only reads stop_reason: no thread hop for it.
                judge_in_thread=job.checked,
                finalize=_finalizer(session, job, rungs, answer),
            )
        except UpstreamError as exc:
            if last or not engine.should_escalate(policy, "api_error"):
                raise
            if isinstance(exc, StreamDropped) and exc.partial is not None:
                # metered_call recorded what the broken stream billed: the host's total must show it too.
                cost = state.prices.cost(model, exc.partial.usage)
                tried.append(_Rung(tier, model, cost, "dropped", None, exc.partial, ""))
            continue
        except BudgetExceededError as exc:
            if not rungs:
                raise
            # The budget can't cover the next rung: the host keeps the answer it already paid for.
            budget_stop = f"escalation stopped, {exc.scope} budget: {fmt_usd(exc.remaining_pusd)} left"
            break
        except LedgerUnavailableError:
            if not rungs:
                raise
            # The next rung can't be reserved (ledger full or locked): keep the answer already paid for.
            budget_stop = "escalation stopped: the ledger could not be written"
            break
        rung = _Rung(
            tier,
            model,
            metered.cost_pusd,
            metered.outcome,
            metered.verdict.failed_check,
            metered.completion,
            metered.request_key,
        )
        rungs.append(rung)
        tried.append(rung)
        spent = metered.spent or spent
        if not metered.recorded:  # journaled: the answer's row and verdict went back with the commit
            answer.written = answer.judged = False
        if metered.outcome != "escalated":
            break
    if not rungs:  # every rung failed upstream and escalation moved past all of them
        raise UpstreamError("the Claude API failed on every tier of the ladder; try again later")
    return rungs, tried, budget_stop, spent


def _finalizer(session: str, job: _Job, rungs: list[_Rung], answer: _Answer) -> Finalize:
    """The answer's `calls` row (and a redo's verdict on the call it replaces), for the record
    transaction of the rung whose answer stands: one commit per answer instead of two or three."""

    def finalize(verdict: Verdict, attempt: records.Attempt) -> Also | None:
        if verdict.outcome == "escalated":  # the ladder climbs on: not the answer the host gets
            return None
        failed = verdict.failed_check
        evidence = [*_evidence(job, rungs), (attempt.tier, learning.adequacy(job.checked, failed))]
        checked = job.checked and failed is None
        call = learning.CallRecord(
            answer.call_id, session, job.family, attempt.tier, attempt.request_key, checked, answer.redo_of
        )

        async def also(conn: WriteConn) -> None:
            # Judged only together with the better answer's row: a failed redo leaves the earlier answer standing.
            if answer.redo_of is not None:
                await learning.judge_in(conn, answer.redo_of, "redone", keep_baseline=False, reason=answer.reason)
                answer.judged = True
            answer.written = await learning.insert_call(conn, call, evidence)

        return also

    return finalize


def _evidence(job: _Job, rungs: list[_Rung]) -> list[tuple[str, bool | None]]:
    """What each rung showed about its tier (`learning.adequacy`)."""
    return [(r.tier, learning.adequacy(job.checked, r.trigger)) for r in rungs]


async def _finish(state: AppState, session: str, job: _Job, run: _Run) -> ToolOutput:
    final = run.rungs[-1]
    answer = run.answer
    redo_of = answer.redo_of
    call_id = answer.call_id
    if redo_of is not None and not answer.judged:
        judged = learning.mark_judged(state.ledger, redo_of, "redone", keep_baseline=False, reason=answer.reason)
        await _after_paid(judged, f"the verdict on {redo_of}")
    if not answer.written:  # the final rung's record could not carry it (journaled, an id clash, a budget stop)
        checked = job.checked and final.trigger is None
        evidence = _evidence(job, run.rungs)
        # Ids are short for the host's sake, and the ledger is shared by every session: a clash with
        # an earlier answer draws again, so a verdict never lands on another session's call.
        for _ in range(CALL_ID_DRAWS):
            call_id = new_call_id()
            record = learning.CallRecord(call_id, session, job.family, final.tier, final.request_key, checked, redo_of)
            if (
                await _after_paid(learning.record_call(state.ledger, record, evidence), f"answer {call_id}")
                is not False
            ):
                break
    assert state.recall is not None
    kept = replace(job, tier=final.tier)
    state.recall.put(call_id, kept, kept.size)
    return await _output(state, session, run, call_id, job.checked, redo_of)


TRIAGE_SYSTEM = (
    "Rate how hard the task below is for a language model. Answer with exactly one word: easy, medium or hard."
)
TRIAGE_PROMPT_CHARS = 4000  # the start of a task says enough about its difficulty


async def _triage(state: AppState, session: str, prompt: str) -> tuple[str | None, int]:
    """A few-token call on the triage tier that sets the difficulty the caller didn't give."""
    policy = state.policy
    triage = policy.triage
    assert triage is not None
    model = policy.tiers[triage.tier]
    text = "Task to rate:\n" + prompt[:TRIAGE_PROMPT_CHARS]
    params = build_params(
        model, Prompt(prompt=text, system=TRIAGE_SYSTEM), max_tokens=triage.max_tokens, min_cacheable=1 << 30
    )
    metered = await metered_call(
        state,
        session,
        tool=TOOL,
        tier=triage.tier,
        params=params,
        step=-1,
        judge=lambda _: Verdict("triage", counts_toward_baseline=False),
        judge_in_thread=False,
    )
    words = re.findall(r"[a-z]+", metered.completion.text.lower())
    # An unusable answer leaves the route to the rules, as if triage were off.
    return next((w for w in words if w in DIFFICULTIES), None), metered.cost_pusd


async def _output(
    state: AppState, session: str, run: _Run, call_id: str, has_checks: bool, redo_of: str | None
) -> ToolOutput:
    decision, rungs = run.decision, run.tried
    final = run.rungs[-1]
    total = run.triage_cost + sum(r.cost_pusd for r in rungs)
    usage = final.completion.usage
    extra = []
    if final.trigger is not None:
        extra.append(f"check failed: {final.trigger}")
    elif not has_checks:
        extra.append("unchecked")
    if run.budget_stop is not None:
        extra.append(run.budget_stop)
    if decision.downgraded_from:
        extra.append(f"downgraded from {decision.downgraded_from}")
    if decision.use_batch:
        extra.append("near budget: batch_submit is 50% off")
    extra += await budget_warnings(state, session, run.spent)
    extra.append(f"id {call_id}")
    line = footer(final.model, total, usage.cache_read, len(rungs) - 1, extra)
    data = {
        "call_id": call_id,
        "model": final.model,
        "tier": final.tier,
        "cost_usd": usd_json(total),
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_write_tokens": usage.cache_write_5m + usage.cache_write_1h,
            "cache_read_tokens": usage.cache_read,
        },
        "attempts": [
            {
                "tier": r.tier,
                "model": r.model,
                "cost_usd": usd_json(r.cost_pusd),
                "outcome": r.outcome,
                "failed": r.trigger,
            }
            for r in rungs
        ],
        "rule": decision.rule,
        "triaged_difficulty": run.triaged,
        "check_passed": final.trigger is None,
        "checked": has_checks and final.trigger is None,
        "redo_of": redo_of,
    }
    return ToolOutput(text=f"{final.completion.text}\n{line}", data=data)
