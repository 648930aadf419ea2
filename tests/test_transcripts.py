"""The host's own bill from Claude Code transcripts: dedup as ccusage does, priced by hand here."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from offload.cli.dashboard_data import HostBillCache
from offload.config.claude_dir import transcripts_dir
from offload.config.pricing import load_prices
from offload.infra.transcripts import Malformed, parse_line, read_host_bill
from transcript_fixtures import assistant, user, write_transcript

M = 10**6  # pusd per token for a rate of $1 per million tokens

OPUS5 = {"in": 5 * M, "w5m": 6_250_000, "w1h": 10 * M, "read": M // 2, "out": 25 * M}  # alias of opus-4-8
SONNET46 = {"in": 3 * M, "w5m": 3_750_000, "w1h": 6 * M, "read": 300_000, "out": 15 * M}
HAIKU45 = {"in": 1 * M, "w5m": 1_250_000, "w1h": 2 * M, "read": 100_000, "out": 5 * M}
HAIKU55_LONG = {"in": M // 2, "w5m": 625_000, "w1h": 1 * M, "read": 50_000, "out": 2_500_000}


def usage(
    inp: int, out: int | str, write: int = 0, read: int = 0, w1h: int | None = None, **more: object
) -> dict[str, object]:
    # out may be a str: one case writes a malformed (quoted) output_tokens.
    u: dict[str, object] = {
        "input_tokens": inp,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": out,
        **more,
    }
    if w1h is not None:
        u["cache_creation"] = {"ephemeral_5m_input_tokens": write - w1h, "ephemeral_1h_input_tokens": w1h}
    return u


def _tree(root: Path) -> None:
    proj = root / "-home-me-proj"
    # Session s1: one response streamed as three lines (thinking, text, tool_use) whose
    # output_tokens grow; only the last copy's 500 is billed.
    a, h = "claude-opus-5", "claude-haiku-5-5"
    write_transcript(
        proj / "s1.jsonl",
        [
            user("s1", "fix the bug; usage of the API is in docs"),
            assistant("s1", "msg_A", "req_A", a, usage(2, 1, 1000, 90000, w1h=1000), block={"type": "thinking"}),
            assistant("s1", "msg_A", "req_A", a, usage(2, 12, 1000, 90000, w1h=1000)),
            assistant("s1", "msg_A", "req_A", a, usage(2, 500, 1000, 90000, w1h=1000), block={"type": "tool_use"}),
            # a total without its breakdown is a 5-minute write
            assistant("s1", "msg_B", "req_B", "claude-sonnet-4-6", usage(10, 200, 400), ts="2026-11-29T08:05:00Z"),
            assistant("s1", "msg_S", "req_S", "<synthetic>", usage(0, 0)),
            assistant("s1", "msg_X", "req_X", a, usage(5, 5), isApiErrorMessage=True),
        ],
    )
    # A subagent's transcript, nested below the session folder.
    write_transcript(
        proj / "s1" / "subagents" / "agent-1.jsonl",
        [assistant("s1", "msg_E", "req_E", "claude-haiku-4-5", usage(100, 50), sidechain=True)],
    )
    # Session s2 resumed s1: Claude Code copied msg_A into the new file. It must count once.
    write_transcript(
        proj / "s2.jsonl",
        [
            assistant("s2", "msg_A", "req_A", a, usage(2, 500, 1000, 90000, w1h=1000)),
            # over haiku-5-5's 100k-token prompt threshold: every token at the long-prompt rates
            assistant("s2", "msg_C", "req_C", h, usage(50_000, 100, 0, 60_000), ts="2026-11-29T09:00Z"),
            assistant("s2", "msg_U", "req_U", "claude-mystery-9", usage(10, 10)),
            assistant("s2", "msg_F", "req_F", "claude-opus-4-8", usage(10, 10, speed="fast")),
            '{"type":"assistant","message":{"usage":{"input_tokens":',  # cut off mid-write
            assistant("s2", "msg_Q", "req_Q", a, usage(1, "12")),
        ],
    )


def test_transcripts_priced_by_hand(tmp_path: Path) -> None:
    _tree(tmp_path)
    bill = read_host_bill(tmp_path, load_prices())

    cost_a = 2 * OPUS5["in"] + 1000 * OPUS5["w1h"] + 90000 * OPUS5["read"] + 500 * OPUS5["out"]
    cost_b = 10 * SONNET46["in"] + 400 * SONNET46["w5m"] + 200 * SONNET46["out"]
    cost_e = 100 * HAIKU45["in"] + 50 * HAIKU45["out"]
    cost_c = 50_000 * HAIKU55_LONG["in"] + 60_000 * HAIKU55_LONG["read"] + 100 * HAIKU55_LONG["out"]
    assert cost_a == 67_510 * M and cost_c == 28_250 * M  # the arithmetic above, in dollars: $0.06751, $0.02825

    by = {s.session_id: s for s in bill.sessions}
    assert set(by) == {"s1", "s2"}
    assert by["s1"].cost_pusd == cost_a + cost_b + cost_e
    assert by["s1"].turns == 3 and by["s1"].unpriced_turns == 0
    assert by["s1"].cost_by_model == {"claude-opus-5": cost_a, "claude-sonnet-4-6": cost_b, "claude-haiku-4-5": cost_e}
    assert by["s1"].usage.output_tokens == 500 + 200 + 50
    assert by["s1"].project == "/home/me/proj"
    assert by["s2"].cost_pusd == cost_c
    assert by["s2"].turns == 3 and by["s2"].unpriced_turns == 2
    assert bill.cost_pusd == cost_a + cost_b + cost_e + cost_c
    # Two streaming copies and one resumed copy of msg_A merged away.
    assert bill.duplicates == 3
    assert bill.skipped == 2  # synthetic + API error: never billed
    assert bill.unpriced == {"claude-mystery-9": 1, "claude-opus-4-8 (fast mode)": 1}
    assert bill.malformed == 2 and not bill.complete
    assert bill.problems[0].endswith("s2.jsonl:5: not JSON")
    assert bill.problems[1].endswith("s2.jsonl:6: usage.output_tokens is '12', not a whole non-negative token count")
    assert bill.files == 3


def test_dedup_keeps_the_largest_main_chain_copy_in_any_order(tmp_path: Path) -> None:
    # The final streaming copy written first (files out of order) still wins, and a sidechain
    # replay of the same response never replaces the main chain's copy even when larger.
    write_transcript(
        tmp_path / "p" / "a.jsonl",
        [
            assistant("s", "m1", "r1", "claude-sonnet-5-5", usage(1, 300)),
            assistant("s", "m1", "r1", "claude-sonnet-5-5", usage(1, 2)),
            assistant("s", "m1", "r1", "claude-sonnet-5-5", usage(1, 900), sidechain=True),
        ],
    )
    bill = read_host_bill(tmp_path, load_prices())
    assert bill.duplicates == 2
    assert bill.sessions[0].usage.output_tokens == 300
    assert bill.cost_pusd == 1 * 2 * M + 300 * 10 * M


def test_lines_without_request_id_dedup_on_message_id_and_without_ids_never_merge(tmp_path: Path) -> None:
    write_transcript(
        tmp_path / "p" / "a.jsonl",
        [
            assistant("s", "m1", None, "claude-sonnet-5-5", usage(0, 10)),
            assistant("s", "m1", None, "claude-sonnet-5-5", usage(0, 10)),
            assistant("s", "", "r", "claude-sonnet-5-5", usage(0, 10)),
            assistant("s", "", "r", "claude-sonnet-5-5", usage(0, 10)),
        ],
    )
    bill = read_host_bill(tmp_path, load_prices())
    assert bill.duplicates == 1 and bill.turns == 3
    assert bill.cost_pusd == 30 * 10 * M


def test_since_filters_by_turn_time(tmp_path: Path) -> None:
    _tree(tmp_path)
    bill = read_host_bill(tmp_path, load_prices(), since=datetime(2026, 11, 29, 8, 30, tzinfo=UTC))
    assert [s.session_id for s in bill.sessions] == ["s2"]
    assert bill.sessions[0].turns == 1  # msg_C at 09:00; the others in s2 are from 08:00


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"type":"assistant","message":{"model":"claude-opus-5","usage":{"output_tokens":1}}}', "no input_tokens"),
        ('{"type":"assistant","message":{"usage":{"input_tokens":1,"output_tokens":1}}}', "no model"),
        (
            '{"type":"assistant","message":{"model":"m","usage":{"input_tokens":-1,"output_tokens":1}}}',
            "usage.input_tokens is -1",
        ),
        ('{"type":"assistant","message":{"model":"m","usage":[]}}', "usage is not an object"),
        (
            '{"type":"assistant","timestamp":"yesterday","message":{"model":"m","usage":{"input_tokens":1,'
            '"output_tokens":1}}}',
            "not ISO 8601",
        ),
        # nested past the parser's recursion limit: reported like any other bad line, not a crash
        ('{"type":"assistant","message":{"usage":' + "[" * 200_000, "not JSON"),
    ],
)
def test_malformed_lines_say_why(line: str, why: str) -> None:
    with pytest.raises(Malformed, match=why):
        parse_line(line, session="s", project="p")


def test_missing_directory_is_an_empty_bill(tmp_path: Path) -> None:
    bill = read_host_bill(tmp_path / "nope", load_prices())
    assert bill.sessions == [] and bill.files == 0 and bill.complete


def test_transcripts_dir_env() -> None:
    assert transcripts_dir({"HOME": "/h"}) == Path("/h/.claude/projects")
    assert transcripts_dir({"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c1,/c2"}) == Path("/c1/projects")
    assert transcripts_dir({"OFFLOAD_CLAUDE_DIR": "/o", "CLAUDE_CONFIG_DIR": "/c"}) == Path("/o/projects")


def test_a_sidechain_replay_under_a_new_request_id_is_not_a_second_turn(tmp_path: Path) -> None:
    write_transcript(
        tmp_path / "p" / "a.jsonl",
        [
            assistant("s", "m1", "r1", "claude-sonnet-5-5", usage(1, 300)),
            assistant("s", "m1", "r-replay", "claude-sonnet-5-5", usage(1, 300), sidechain=True),
            assistant("s", "m2", "r2", "claude-sonnet-5-5", usage(1, 7), sidechain=True),  # a real subagent turn
        ],
    )
    bill = read_host_bill(tmp_path, load_prices())
    assert bill.duplicates == 1 and bill.turns == 2
    assert bill.cost_pusd == 2 * 2 * M + 307 * 10 * M


def test_links_out_of_the_directory_are_reported_not_read(tmp_path: Path) -> None:
    # The dashboard serves what it reads: a *.jsonl symlink must not pull in a file from
    # elsewhere (another user's transcripts, anything readable). A link inside the tree is fine.
    root, elsewhere = tmp_path / "projects", tmp_path / "elsewhere"
    haiku = "claude-haiku-4-5"
    write_transcript(elsewhere / "x.jsonl", [assistant("sx", "m1", "r1", haiku, usage(1, 1))])
    own = write_transcript(root / "-p" / "s.jsonl", [assistant("s", "m2", "r2", haiku, usage(1, 1))])
    (root / "-p" / "out.jsonl").symlink_to(elsewhere / "x.jsonl")
    (root / "-p" / "also-s.jsonl").symlink_to(own)
    (root / "-q").symlink_to(elsewhere, target_is_directory=True)
    bill = read_host_bill(root, load_prices())
    assert [s.session_id for s in bill.sessions] == ["s"]
    assert bill.duplicates == 1  # s.jsonl read twice through the inside link, counted once
    assert bill.malformed == 1 and not bill.complete
    assert bill.problems == [f"{root / '-p' / 'out.jsonl'}: links outside {root}; not read"]


def test_the_dashboard_cache_rereads_only_files_that_changed(tmp_path: Path) -> None:
    # The page polls every few seconds and Claude Code appends to the live session's file on
    # every turn; re-reading gigabytes of finished sessions each time would pin a core.
    haiku, since = "claude-haiku-4-5", datetime(2026, 1, 1, tzinfo=UTC)
    old = write_transcript(tmp_path / "-p" / "old.jsonl", [assistant("old", "m1", "r1", haiku, usage(1000, 0))])
    live = write_transcript(tmp_path / "-p" / "live.jsonl", [assistant("live", "m2", "r2", haiku, usage(2000, 0))])
    cache = HostBillCache(tmp_path, load_prices())
    first = {s.session_id: s.usage.input_tokens for s in cache.get(since).sessions}
    assert first == {"old": 1000, "live": 2000}
    # Same size and mtime: the cache must not look inside (proved by content it would price differently).
    stamp = old.stat()
    old.write_text(old.read_text().replace('"input_tokens":1000', '"input_tokens":9999'), encoding="utf-8")
    os.utime(old, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    write_transcript(
        live, [assistant("live", "m2", "r2", haiku, usage(2000, 0)), assistant("live", "m3", "r3", haiku, usage(5, 0))]
    )
    second = cache.get(since)
    assert {s.session_id: s.usage.input_tokens for s in second.sessions} == {"old": 1000, "live": 2005}
    assert second.files == 2 and second.turns == 3 and second.complete
    old.touch()  # now it did change: read again
    assert {s.session_id: s.usage.input_tokens for s in cache.get(since).sessions}["old"] == 9999


def test_web_search_fees_are_named_not_silently_left_out(tmp_path: Path) -> None:
    # Server-side web search is billed per request on top of tokens; the price table has no
    # such rate, so the bill says it is incomplete instead of reading as the whole cost.
    searched = usage(1000, 100, server_tool_use={"web_search_requests": 3, "web_fetch_requests": 1})
    plain = usage(1000, 100, server_tool_use={"web_search_requests": 0, "web_fetch_requests": 0})
    haiku = "claude-haiku-4-5"
    write_transcript(
        tmp_path / "-p" / "s.jsonl",
        [assistant("s", "m1", "r1", haiku, searched), assistant("s", "m2", "r2", haiku, plain)],
    )
    bill = read_host_bill(tmp_path, load_prices())
    assert bill.unpriced_extras == {"web search requests": 3}
    assert bill.unpriced == {} and not bill.complete
    # The tokens are still priced, by hand: 2 x (1000 in + 100 out) at Haiku 4.5's rates.
    assert bill.cost_pusd == 2 * (1000 * HAIKU45["in"] + 100 * HAIKU45["out"])
    bad = (
        '{"type":"assistant","timestamp":"2026-11-29T08:00:00Z","message":{"model":"m",'
        '"usage":{"input_tokens":1,"output_tokens":1,"server_tool_use":[]}}}'
    )
    with pytest.raises(Malformed, match="server_tool_use is not an object"):
        parse_line(bad, session="s", project="p")
