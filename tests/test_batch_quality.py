"""The batch quality loop: checks on batch items, follow-up rounds one tier up under one batch id,
call_ids for `redo_of`, and exactly-once settlement across rounds and restarts.

Real MCP client → server (its own collector) → real SDK over HTTP → emulator → SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from offload.config.settings import Settings, shipped
from offload.core.money import usd_to_pusd
from offload.infra.ledger import batches as store
from offload.mcp.server import build_server
from offload.services.batches import SubmitArgs, results, run_once, service, status, submit
from offload.state import AppState, open_state

pytestmark = pytest.mark.anyio

# Cheap answers the "hard" items well-formed but wrong; standard gets them right. Nobody can do
# the "never" item. "easy" items pass on the cheap tier.
SCRIPT = [
    {"model": "claude-haiku-5-5", "match": "hard", "reply": "I think it is about seven."},
    {"match": "hard", "reply": "ANSWER: 42"},
    {"match": "never", "reply": "I cannot tell."},
    {"match": "easy", "reply": "ANSWER: 1"},
]
REQUESTS = [
    {"prompt": "easy one", "custom_id": "e1"},
    {"prompt": "hard one", "custom_id": "h1"},
    {"prompt": "never mind", "custom_id": "n1"},
    {"prompt": "hard two", "custom_id": "h2"},
    {"prompt": "easy two", "custom_id": "e2"},
]


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def served(emu: Any) -> list[dict[str, Any]]:
    """Every request line the emulator's batch API accepted, in order."""
    return [q for r in emu.state.calls("/v1/messages/batches", "POST") for q in r.body["requests"]]


async def wait_done(c: Client, bid: str, timeout: float = 60) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            st = await c.call_tool("batch_status", {"batch_id": bid})
            assert not st.is_error, st.content
            assert isinstance(st.structured_content, dict)
            if st.structured_content["state"] == "done":
                return st.structured_content
            await anyio.sleep(0.1)


async def collect_until_done(state: AppState, bid: str, timeout: float = 30) -> None:
    """Run this state's collector (as its server would) until the batch, every round, is done."""
    with anyio.fail_after(timeout):
        while (await status(state, "s1", bid)).data["state"] != "done":
            await run_once(state)
            await anyio.sleep(0.05)


async def test_failed_items_are_re_asked_a_tier_up_and_each_settles_once(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(script=SCRIPT, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            sub = await c.call_tool("batch_submit", {"requests": REQUESTS, "must_match": r"ANSWER: \d+"})
            assert not sub.is_error, sub.content
            assert isinstance(sub.structured_content, dict)
            bid = sub.structured_content["batch_id"]
            assert sub.structured_content["tier"] == "cheap"  # batch.default_tier: no rule matched
            st = await wait_done(c, bid)
            res = await c.call_tool("batch_results", {"batch_id": bid})
            listed = await c.call_tool("batch_status", {})
        lines = served(emu)
        posts = emu.state.calls("/v1/messages/batches", "POST")
    db = settings.db_path

    # Round 0: all five on cheap; round 1: the three that failed, on standard; round 2: "never" on premium.
    assert [[q["params"]["model"] for q in p.body["requests"]] for p in posts] == [
        ["claude-haiku-5-5"] * 5,
        ["claude-sonnet-5-5"] * 3,
        ["claude-opus-5-5"],
    ]
    # Each round re-sends the item's own request under its original custom_id.
    assert [q["custom_id"] for q in posts[1].body["requests"]] == ["i1", "i2", "i3"]
    assert posts[1].body["requests"][0]["params"]["messages"] == posts[0].body["requests"][1]["params"]["messages"]
    # Exactly once: one attempt row per request the emulator served, none twice.
    attempts = rows(db, "SELECT request_key, model, outcome, baseline_pusd, cost_pusd FROM attempts WHERE batch = 1")
    assert len(attempts) == len(lines) == 9
    assert len({a[0] for a in attempts}) == 9
    outcomes = sorted((a[1], a[2]) for a in attempts)
    assert outcomes == sorted(
        [("claude-haiku-5-5", "ok")] * 2
        + [("claude-haiku-5-5", "escalated")] * 3
        + [("claude-sonnet-5-5", "ok")] * 2
        + [("claude-sonnet-5-5", "escalated")]
        + [("claude-opus-5-5", "check_failed")]
    )
    # Re-asked answers cost offload money and stand for no call the host would have made.
    assert all(a[3] == 0 for a in attempts if a[2] == "escalated")
    assert all(a[3] > 0 and a[4] > 0 for a in attempts if a[2] != "escalated")
    assert rows(db, "SELECT COUNT(*) FROM reservations") == [(0,)]

    # One batch id, its rounds, final answers in submission order.
    assert [r["tier"] for r in st["rounds"]] == ["cheap", "standard", "premium"]
    assert st["counts"] == {"succeeded": 4, "failed": 1} and st["pending"] == 0
    total = sum(a[4] for a in attempts)
    assert usd_to_pusd(st["cost_usd"]) == total
    assert isinstance(listed.structured_content, dict)
    assert listed.structured_content["batches"] == []  # no open batch, and rounds are not listed apart
    assert isinstance(res.structured_content, dict)
    items = res.structured_content["items"]
    assert [i["label"] for i in items] == ["e1", "h1", "n1", "h2", "e2"]
    assert [(i["status"], i["tier"]) for i in items] == [
        ("succeeded", "cheap"),
        ("succeeded", "standard"),
        ("failed", "premium"),
        ("succeeded", "standard"),
        ("succeeded", "cheap"),
    ]
    assert [i["text"] for i in items if i["status"] == "succeeded"] == [
        "ANSWER: 1",
        "ANSWER: 42",
        "ANSWER: 42",
        "ANSWER: 1",
    ]
    assert "must_match_failed" in items[2]["text"] and "I cannot tell." in items[2]["text"]
    # Every final answer has a call_id the host can redo, recorded once in the ledger.
    ids = [i["call_id"] for i in items]
    assert all(i and i.startswith("rc_") for i in ids) and len(set(ids)) == 5
    calls = dict((c[0], c[1:]) for c in rows(db, "SELECT call_id, tier, checked FROM calls"))
    assert [calls[i] for i in ids] == [("cheap", 1), ("standard", 1), ("premium", 0), ("standard", 1), ("cheap", 1)]
    # Learning sees where the family's answers were adequate: h1 failed on cheap, passed on standard.
    h1 = items[1]["call_id"]
    assert rows(db, "SELECT tier, adequate FROM tier_evidence WHERE call_id = ? ORDER BY id", h1) == [
        ("cheap", 0),
        ("standard", 1),
    ]


async def test_a_stated_difficulty_routes_the_batch_over_a_task_rule(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(batch_delay_s=0.1) as emu:
        async with Client(build_server(make_settings(emu.url))) as c:
            sub = await c.call_tool(
                "batch_submit",
                {"template": "Sort {item}", "items": ["a", "b"], "task": "classify", "difficulty": "medium"},
            )
            bad = await c.call_tool("batch_submit", {"template": "Sort {item}", "items": ["a"], "must_match": "("})
    assert isinstance(sub.structured_content, dict)
    assert (sub.structured_content["tier"], sub.structured_content["model"]) == ("standard", "claude-sonnet-5-5")
    assert bad.is_error and "must_match" in str(bad.content[0].text)  # type: ignore[union-attr]


async def test_redo_of_a_batch_items_call_id_reruns_it_one_tier_up(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    script = [
        {"model": "claude-haiku-5-5", "match": "capital", "reply": "ANSWER: Sydney"},
        {"model": "claude-sonnet-5-5", "match": "capital", "reply": "ANSWER: Canberra"},
    ]
    system = "You answer geography questions in the form ANSWER: <city>."
    with running(script=script, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            sub = await c.call_tool(
                "batch_submit",
                {"template": "Name the capital of {item}.", "items": ["Australia", "Brazil"], "system": system},
            )
            assert isinstance(sub.structured_content, dict), sub.content
            bid = sub.structured_content["batch_id"]
            await wait_done(c, bid)
            res = await c.call_tool("batch_results", {"batch_id": bid})
            assert isinstance(res.structured_content, dict)
            item, other = res.structured_content["items"]
            assert item["text"] == "ANSWER: Sydney" and item["tier"] == "cheap"
            assert item["call_id"] in res.content[0].text  # type: ignore[union-attr]
            redo = await c.call_tool("routed_complete", {"redo_of": item["call_id"], "reason": "not Sydney"})
        # Another server process, in a later conversation of the same user (results come hours
        # later), rebuilds the item's request from the batch's record: it knows the item was redone
        # already, and an unknown id gets the usual error.
        later = make_settings(emu.url, session_id="a-later-conversation")
        async with Client(build_server(later)) as again:
            twice = await again.call_tool("routed_complete", {"redo_of": item["call_id"]})
            gone = await again.call_tool("routed_complete", {"redo_of": "rc_00000000"})
            cold = await again.call_tool("routed_complete", {"redo_of": other["call_id"]})
        sync = [r for r in emu.state.calls("/v1/messages") if r.method == "POST"]
    assert not redo.is_error, redo.content
    assert isinstance(redo.structured_content, dict)
    assert redo.structured_content["tier"] == "standard" and redo.structured_content["redo_of"] == item["call_id"]
    assert redo.content[0].text.startswith("ANSWER: Canberra")  # type: ignore[union-attr]
    # The same request as the batch sent (system, template and item), the host resent none of it.
    call, cold_call = sync
    sent = "".join(b["text"] for b in call.body["messages"][0]["content"])
    assert call.body["model"] == "claude-sonnet-5-5" and sent == "Name the capital of Australia."
    assert call.body["system"][0]["text"] == system
    db = settings.db_path
    assert rows(db, "SELECT verdict FROM calls WHERE call_id = ?", item["call_id"]) == [("redone",)]
    assert isinstance(redo.structured_content, dict)
    new_id = redo.structured_content["call_id"]
    assert twice.is_error and f"already redone as {new_id}" in twice.content[0].text  # type: ignore[union-attr]
    assert gone.is_error and "unknown or expired" in gone.content[0].text  # type: ignore[union-attr]
    assert isinstance(cold.structured_content, dict) and cold.structured_content["tier"] == "standard", cold.content
    assert "".join(b["text"] for b in cold_call.body["messages"][0]["content"]) == "Name the capital of Brazil."


async def test_a_restart_between_sending_a_follow_up_round_and_collecting_it_collects_it_once(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(script=SCRIPT, batch_delay_s=0.2) as emu:
        settings = make_settings(emu.url)
        args = SubmitArgs(requests=tuple(REQUESTS[:3]), must_match=r"ANSWER: \d+", tier="standard")
        async with open_state(settings) as first:
            out = await submit(first, "s1", args)
            bid = out.data["batch_id"]
            # Collect round 0 and send round 1, then stop: this process is gone before round 1 ends.
            with anyio.fail_after(30):
                while True:
                    await run_once(first)
                    sent = [p for p in await store.parts(first.ledger.conn, bid) if p["batch_id"] != bid]
                    if sent and all(p["state"] == "in_progress" for p in sent):
                        break
                    await anyio.sleep(0.05)
        assert rows(settings.db_path, "SELECT state FROM batches WHERE id = ?", bid) == [("followed",)]
        async with open_state(settings) as second:
            await collect_until_done(second, bid, 30)
            final = (await status(second, "s1", bid)).data
        lines = served(emu)
        results_calls = [r for r in emu.state.calls() if r.path.endswith("/results")]
    db = settings.db_path
    # Round 0 on standard (3), round 1 on premium: the "never" item only ("hard" passed on standard).
    assert [q["params"]["model"] for q in lines] == ["claude-sonnet-5-5"] * 3 + ["claude-opus-5-5"]
    assert len(results_calls) == 2
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT request_key) FROM attempts WHERE batch = 1") == [(4, 4)]
    assert final["counts"] == {"succeeded": 2, "failed": 1}
    assert rows(db, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert rows(db, "SELECT state FROM batches ORDER BY round") == [("done",), ("done",)]


class _Died(Exception):
    """Stands for the process dying: nothing after the raise runs."""


async def test_a_follow_up_round_saved_but_not_sent_is_sent_once_after_a_restart(
    running: Callable[..., Any], make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(script=SCRIPT, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        args = SubmitArgs(requests=tuple(REQUESTS[:2]), must_match=r"ANSWER: \d+", tier="cheap")
        async with open_state(settings) as first:
            bid = (await submit(first, "s1", args)).data["batch_id"]

            async def die(*_: Any) -> None:
                raise _Died

            # The process stops right after the follow-up round was written, before it is sent.
            monkeypatch.setattr(service, "_send_parts", die)
            with anyio.fail_after(30), pytest.raises(_Died):
                while True:
                    await run_once(first)
                    await anyio.sleep(0.05)
            monkeypatch.undo()
        db = settings.db_path
        assert rows(db, "SELECT state, round FROM batches ORDER BY round") == [("followed", 0), ("open", 1)]
        assert rows(db, "SELECT p.state FROM batch_parts p JOIN batches b ON b.id = p.batch_id WHERE round = 1") == [
            ("pending",)
        ]
        assert len(emu.state.calls("/v1/messages/batches", "POST")) == 1
        async with open_state(settings) as second:
            await collect_until_done(second, bid, 30)
        lines = served(emu)
    assert [q["params"]["model"] for q in lines] == ["claude-haiku-5-5"] * 2 + ["claude-sonnet-5-5"]
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT request_key) FROM attempts WHERE batch = 1") == [(3, 3)]
    assert rows(db, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert rows(db, "SELECT text FROM batch_items i JOIN batches b ON b.id = i.batch_id WHERE round = 1") == [
        ("ANSWER: 42",)
    ]


async def test_two_collectors_make_each_follow_up_round_once(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(script=SCRIPT, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        args = SubmitArgs(requests=tuple(REQUESTS), must_match=r"ANSWER: \d+")
        async with open_state(settings) as a, open_state(settings) as b:
            bid = (await submit(a, "s1", args)).data["batch_id"]

            async def loop(state: Any) -> None:
                while (await status(state, "s1", bid)).data["state"] != "done":
                    await run_once(state)
                    await anyio.sleep(0.01)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(loop, a)
                    tg.start_soon(loop, b)
        posts = emu.state.calls("/v1/messages/batches", "POST")
        lines = served(emu)
    db = settings.db_path
    assert [len(p.body["requests"]) for p in posts] == [5, 3, 1]
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT request_key) FROM attempts WHERE batch = 1") == [(9, 9)]
    assert len(lines) == 9
    assert rows(db, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM calls") == [(5,)]


async def test_a_follow_up_round_the_budget_cannot_cover_leaves_the_items_failed_with_the_reason(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = tmp_path / "tight.yaml"
    policy.write_text(shipped("default.yaml").read_text().replace("session_usd: 2", "session_usd: 0.0002"))
    with running(script=SCRIPT, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url, policy_path=policy)
        args = SubmitArgs(requests=tuple(REQUESTS[:2]), must_match=r"ANSWER: \d+", max_tokens=100)
        async with open_state(settings) as state:
            bid = (await submit(state, "s1", args)).data["batch_id"]
            await collect_until_done(state, bid, 30)
            page = await results(state, "s1", bid, 0, 10, None)
        posts = emu.state.calls("/v1/messages/batches", "POST")
    assert len(posts) == 1  # the re-ask was never sent
    items = page.data["items"]
    assert [(i["label"], i["status"]) for i in items] == [("e1", "succeeded"), ("h1", "failed")]
    assert "must_match_failed" in items[1]["text"] and "not re-asked on standard" in items[1]["text"]
    assert "budget" in items[1]["text"]
    db = settings.db_path
    assert rows(db, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert rows(db, "SELECT state FROM batches") == [("done",)]


async def test_retry_failed_picks_up_an_item_that_errored_in_a_follow_up_round(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    script = [
        {"model": "claude-sonnet-5-5", "match": "hard", "error": {"status": 500, "type": "api_error", "message": "x"}},
        *SCRIPT,
    ]
    with running(script=script, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        args = SubmitArgs(requests=tuple(REQUESTS[:2]), must_match=r"ANSWER: \d+", tier="cheap")
        async with open_state(settings) as state:
            bid = (await submit(state, "s1", args)).data["batch_id"]
            await collect_until_done(state, bid, 30)
            counts = (await status(state, "s1", bid)).data["counts"]
            again = await submit(state, "s1", SubmitArgs(retry_failed=bid))
        posts = emu.state.calls("/v1/messages/batches", "POST")
    assert counts == {"succeeded": 1, "errored": 1}
    assert again.data["requests"] == 1
    assert [q["custom_id"] for q in posts[-1].body["requests"]] == ["i0"]
    assert posts[-1].body["requests"][0]["params"]["messages"][0]["content"][-1]["text"] == "hard one"


async def test_a_response_schema_is_asked_for_after_the_cached_system_and_malformed_answers_are_re_asked(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    script = [
        {"model": "claude-haiku-5-5", "match": "beta", "reply": "Sure! n is 2."},
        {"match": "alpha", "reply": '{"n": 1}'},
        {"match": "beta", "reply": '{"n": 2}'},
    ]
    system = "You extract numbers. " * 400  # long enough to be cached
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    # Two items alone would not repay a cache write under adaptive placement: place it always.
    policy = tmp_path / "policy.yaml"
    policy.write_text(shipped("default.yaml").read_text().replace("caching:\n", "caching:\n  placement: always\n"))
    with running(script=script, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url, policy_path=policy)
        args = SubmitArgs(
            template="Extract from {item}", items=("alpha", "beta"), system=system, response_schema=schema
        )
        async with open_state(settings) as state:
            bid = (await submit(state, "s1", args)).data["batch_id"]
            await collect_until_done(state, bid, 30)
            page = await results(state, "s1", bid, 0, 10, None)
        posts = emu.state.calls("/v1/messages/batches", "POST")
    first = posts[0].body["requests"][0]["params"]
    assert first["system"][0]["text"] == system and "cache_control" in first["system"][0]
    assert (
        first["system"][1]["text"].startswith("Reply with only a JSON value")
        and "cache_control" not in first["system"][1]
    )
    assert [len(p.body["requests"]) for p in posts] == [2, 1]
    assert posts[1].body["requests"][0]["params"]["model"] == "claude-sonnet-5-5"
    assert [(i["text"], i["tier"]) for i in page.data["items"]] == [('{"n": 1}', "cheap"), ('{"n": 2}', "standard")]
    outcomes = rows(settings.db_path, "SELECT model, outcome FROM attempts ORDER BY model, outcome")
    assert outcomes == [("claude-haiku-5-5", "escalated"), ("claude-haiku-5-5", "ok"), ("claude-sonnet-5-5", "ok")]


async def test_a_round_of_items_with_long_indexes_is_sent_with_its_true_length(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """A round keeps its items' own indexes ("i10", "i11"): sized as 0..n-1, its body was longer
    than the Content-Length sent, and the round never reached the API."""
    requests = [{"prompt": f"easy {i}", "custom_id": f"e{i}"} for i in range(10)]
    requests += [{"prompt": "hard one", "custom_id": "h1"}, {"prompt": "hard two", "custom_id": "h2"}]
    with running(script=SCRIPT, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            sub = await c.call_tool("batch_submit", {"requests": requests, "must_match": r"ANSWER: \d+"})
            assert isinstance(sub.structured_content, dict), sub.content
            st = await wait_done(c, sub.structured_content["batch_id"])
        posts = emu.state.calls("/v1/messages/batches", "POST")
    assert st["counts"] == {"succeeded": 12}
    assert [r.status for r in posts] == [200, 200]
    assert [q["custom_id"] for q in posts[1].body["requests"]] == ["i10", "i11"]


@pytest.mark.parametrize("submitter", ["ana", None])
async def test_a_round_is_the_submitters_spend_whoever_collects_it(
    running: Callable[..., Any], make_settings: Callable[..., Settings], submitter: str | None
) -> None:
    """Team budgets: ana (or nobody named) submits in project pa, bob's server in pb collects and
    re-asks. The round's hold and every result count against the submitter, not the collector."""
    with running(script=SCRIPT, batch_delay_s=0.5) as emu:
        mine = make_settings(emu.url, user=submitter, project="pa")
        theirs = make_settings(emu.url, user="bob", project="pb")
        args = SubmitArgs(requests=tuple(REQUESTS), must_match=r"ANSWER: \d+")
        async with open_state(mine) as a:
            bid = (await submit(a, "s1", args)).data["batch_id"]
        db = mine.db_path
        hold = "SELECT r.user_name, r.project FROM batches b JOIN reservations r ON r.id = b.reservation_id"
        held: list[tuple[Any, ...]] = []
        async with open_state(theirs) as b:
            with anyio.fail_after(60):
                while (await status(b, "s1", bid)).data["state"] != "done":
                    await run_once(b)
                    held = held or rows(db, hold + " WHERE b.root_id = ?", bid)
                    await anyio.sleep(0.05)
    assert held == [(submitter, "pa")]
    assert rows(db, "SELECT DISTINCT user_name, project FROM attempts") == [(submitter, "pa")]
    assert rows(db, "SELECT COUNT(*) FROM attempts WHERE batch = 1") == [(9,)]  # 5, 3 on standard, "never" on premium


async def test_a_first_rounds_part_its_submitter_never_sent_is_sent_once_by_a_collector(
    running: Callable[..., Any], make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(script=SCRIPT, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        args = SubmitArgs(requests=tuple(REQUESTS[:2]), must_match=r"ANSWER: \d+")
        async with open_state(settings) as first:

            async def die(*_: Any) -> None:
                raise _Died

            # The submitter dies after the batch is saved, before its part is sent.
            monkeypatch.setattr(service, "_send_parts", die)
            with pytest.raises(_Died):
                await submit(first, "s1", args)
            monkeypatch.undo()
        db = settings.db_path
        bid = rows(db, "SELECT id FROM batches")[0][0]
        async with open_state(settings) as second:
            await run_once(second)  # a part saved a moment ago may still be its submitter's to send
            assert emu.state.calls("/v1/messages/batches", "POST") == []
            conn = sqlite3.connect(db)  # ...ten minutes later it is nobody's
            conn.execute("UPDATE batches SET created_at = '2000-01-01T00:00:00.000000Z'")
            conn.commit()
            conn.close()
            await collect_until_done(second, bid, 30)
        posts = emu.state.calls("/v1/messages/batches", "POST")
    assert len(posts) == 2  # the first round once, then its follow-up round
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT request_key) FROM attempts WHERE batch = 1") == [(3, 3)]
    assert rows(db, "SELECT COUNT(*) FROM reservations") == [(0,)]


async def test_a_small_round_decides_its_own_caching(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """42 items share a long system prompt: the first round caches it. Its follow-up round (2 items
    on another model, another cache) would only pay a write premium nobody reads: no breakpoint."""
    system = "You answer with ANSWER and a number. " * 400
    requests = [{"prompt": f"easy {i}", "custom_id": f"e{i}"} for i in range(40)]
    requests += [{"prompt": "hard one", "custom_id": "h1"}, {"prompt": "hard two", "custom_id": "h2"}]
    with running(script=SCRIPT, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            sub = await c.call_tool(
                "batch_submit", {"requests": requests, "system": system, "must_match": r"ANSWER: \d+"}
            )
            assert isinstance(sub.structured_content, dict), sub.content
            st = await wait_done(c, sub.structured_content["batch_id"])
        posts = emu.state.calls("/v1/messages/batches", "POST")
    assert st["counts"] == {"succeeded": 42}
    first, second = (p.body["requests"][0]["params"] for p in posts)
    assert "cache_control" in first["system"][0] and second["model"] == "claude-sonnet-5-5"
    assert all("cache_control" not in block for block in second["system"])


async def test_a_slow_must_match_on_many_items_never_stalls_the_server(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """A catastrophic regex spends its whole time budget on every answer (24 x 0.25 s). Judged on
    the event loop, every other call of this server (and its heartbeat) waited through all of it."""
    script = [{"match": "long", "reply": "word " * 400 + "!"}]
    requests = tuple({"prompt": f"long {i}", "custom_id": f"l{i}"} for i in range(24))
    gaps: list[float] = []
    with running(script=script, batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        args = SubmitArgs(requests=requests, must_match=r"(\w+\s?)+$", tier="premium")
        async with open_state(settings) as state:
            bid = (await submit(state, "s1", args)).data["batch_id"]
            done = anyio.Event()

            async def tick() -> None:  # stands for any other tool call on this server
                last = anyio.current_time()
                while not done.is_set():
                    await anyio.sleep(0.05)
                    now = anyio.current_time()
                    gaps.append(now - last)
                    last = now

            async with anyio.create_task_group() as tg:
                tg.start_soon(tick)
                await collect_until_done(state, bid, 60)
                done.set()
            page = await results(state, "s1", bid, 0, 30, None)
    assert [i["status"] for i in page.data["items"]] == ["failed"] * 24  # the top tier: nothing to re-ask
    assert max(gaps) < 2.0, max(gaps)  # 24 x 0.25 s = 6 s if judged on the loop
