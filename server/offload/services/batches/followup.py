"""Follow-up rounds: items whose answers failed their check are re-asked one tier up.

A settled round that owes one is 'escalating' in the ledger; any server's collector then
reserves the next round's worst case, writes the round (a batch of its own, under the same
root id) and marks the parent 'followed' in one transaction, and only then sends it. So a
restart at any point either finds the round owed (and makes it) or finds it saved (and sends
or collects it): nothing is sent twice, nothing is settled twice.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio

from offload.core.errors import BudgetExceededError
from offload.infra.ledger import batches as store
from offload.infra.ledger import budgets, learning
from offload.infra.ledger import windows as w
from offload.metering import placement
from offload.metering.metered import limits_of
from offload.policy import engine
from offload.services.batches import service
from offload.services.batches.build import Shared, Spec
from offload.services.batches.quality import Quality

if TYPE_CHECKING:
    from offload.state import AppState

log = logging.getLogger("offload.services.batches")

# A first round's part still unsent this long after the batch was saved lost its submitter
# (begin_submit's own lease is as long): any collector sends it.
UNSENT_AFTER_S = 600


async def run_once(state: AppState) -> int:
    """Make every owed round and send every saved but unsent part; returns how many were handled."""
    conn = state.ledger.conn
    stale = w.iso(w.utcnow() - timedelta(seconds=UNSENT_AFTER_S))
    owed, unsent = await store.followup_work(conn, stale)
    for batch_id in owed:
        await start(state, batch_id)
    if owed:  # the rounds just made are sent by `start` itself
        unsent = (await store.followup_work(conn, stale))[1]
    for batch_id in unsent:
        row = await store.batch_row(conn, batch_id)
        assert row is not None
        # A round's parts are its own (no batch has a follow-up round as its root); a first round's
        # parts carry their own indexes, read back with the body.
        count = len(await store.parts(conn, batch_id))
        shared = Shared.from_json(str(row["shared"]))
        target = state.ledger.url or state.ledger.path
        sizes = [
            await anyio.to_thread.run_sync(service._part_size, target, batch_id, part, shared) for part in range(count)
        ]
        await service._send_parts(state, batch_id, shared, sizes)
    return len(owed) + len(unsent)


async def start(state: AppState, parent_id: str) -> str | None:
    """Make and send the next round of `parent_id`; the new round's id, or None if none was made."""
    conn, policy = state.ledger.conn, state.policy
    row = await store.batch_row(conn, parent_id)
    if row is None or row["state"] != "escalating":
        return None
    tier = str(row["tier"])
    up = engine.tier_above(policy, tier)
    if up is None or str(row["shared"]) == "{}":
        await store.give_up(state.ledger, parent_id, f"no tier above {tier} to re-ask it on")
        return None
    quality = Quality.of(str(row["quality"]))
    model = policy.tiers[up]
    first = Shared.from_json(str(row["shared"]))
    owed = await store.owed_items(conn, parent_id)
    # A round is a new, smaller batch on another model: whether caching its prefix pays is its own
    # question (a 1h write for three items nobody reads after costs 2x their input).
    prompt = service._shared_prompt(first.system, first.prefix, first.instruction)
    shared = replace(
        first,
        model=model,
        max_tokens=policy.max_tokens_for(up, quality.max_tokens),
        min_cacheable=state.prices.min_cacheable(model),
        ttl=placement.batch_ttl(state, model, prompt, len(owed)) or "",
    )
    specs = [Spec(str(r["label"]), str(r["body"]), r["system"]) for r in owed]
    observed = await learning.typical_output(conn, model)
    part_of, part_counts, part_bytes, worst, typical, sync = await anyio.to_thread.run_sync(
        service._priced, state, shared, specs, observed, [int(r["idx"]) for r in owed]
    )
    session = str(row["session_id"])
    try:
        # The submitter's spend and budgets, whichever process (and user) collects and re-asks it.
        who = budgets.Who(row["user_name"], row["project"])
        reservation = await budgets.reserve(state.ledger, session, sum(worst), limits_of(policy), who=who)
    except BudgetExceededError as exc:
        await store.give_up(state.ledger, parent_id, f"not re-asked on {up}: {exc}")
        return None
    child = store.new_batch_id()
    batch = store.NewBatch(
        id=child,
        session_id=session,
        policy=policy.name,
        tier=up,
        model=model,
        baseline_model=str(row["baseline_model"]),
        request_count=len(specs),
        worst_pusd=sum(worst),
        typical_pusd=typical,
        sync_pusd=sync,
        shared=shared.to_json(),
        owner=row["owner"],
        quality=str(row["quality"]),
        root_id=row["root_id"] or parent_id,
        round=int(row["round"]) + 1,
    )
    items = (
        (int(r["idx"]), part_of[i], specs[i].label, specs[i].body, specs[i].system, worst[i])
        for i, r in enumerate(owed)
    )
    try:
        made = await store.create_followup(state.ledger, parent_id, batch, items, part_counts, reservation)
    except BaseException:
        # Shielded: a host's cancel lands here too, and an unshielded release in a cancelled scope
        # never ran, leaving the batch's worst case held (a saved batch took the hold over: no-op).
        with anyio.CancelScope(shield=True):
            await budgets.release(state.ledger, reservation)
        raise
    if not made:  # another process made this round first
        await budgets.release(state.ledger, reservation)
        return None
    log.info("batch %s: %d item(s) re-asked on %s as round %d (%s)", batch.root_id, len(specs), up, batch.round, child)
    await service._send_parts(state, child, shared, part_bytes)
    return child
