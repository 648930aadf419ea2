"""Pure batch building: modes, params layout with cache breakpoints, and the split into API batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offload.core.errors import InputError
from offload.services.batches import build
from offload.services.batches.build import Shared, Spec, SubmitArgs


def test_split_starts_a_second_part_after_100000_requests() -> None:
    parts = build.split([300] * 100_001)
    assert parts.count(0) == 100_000 and parts[-1] == 1 and len(parts) == 100_001


def test_split_by_bytes_keeps_every_part_under_the_limit() -> None:
    sizes = [90_000_000, 90_000_000, 90_000_000, 10, 10]
    parts = build.split(sizes)
    assert parts == [0, 0, 1, 1, 1]
    for p in set(parts):
        assert sum(s + 1 for s, q in zip(sizes, parts, strict=True) if q == p) + 15 <= build.MAX_BATCH_BYTES


def test_split_refuses_a_single_request_over_the_limit() -> None:
    with pytest.raises(InputError, match="request 1 alone"):
        build.split([10, build.MAX_BATCH_BYTES])


@pytest.mark.parametrize(
    ("args", "mode"),
    [
        (SubmitArgs(requests=({"prompt": "a"},)), "requests"),
        (SubmitArgs(template="{item}", items=("a",)), "items"),
        (SubmitArgs(template="{content}", files=("*.md",)), "files"),
        (SubmitArgs(retry_failed="b_1"), "retry"),
    ],
)
def test_mode_of_each_input_shape(args: SubmitArgs, mode: str) -> None:
    assert build.mode_of(args) == mode


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (SubmitArgs(), "nothing to run"),
        (SubmitArgs(items=("a",)), "items need a template"),
        (SubmitArgs(requests=({"prompt": "a"},), template="{item}"), "template is not used with requests"),
        (SubmitArgs(retry_failed="b_1", tier="cheap"), "send only retry_failed"),
        (SubmitArgs(items=("a",), files=("b",), template="{item}"), "template\\+items and template\\+files"),
    ],
)
def test_mode_of_refuses_ambiguous_input(args: SubmitArgs, message: str) -> None:
    with pytest.raises(InputError, match=message):
        build.mode_of(args)


def test_shared_prefix_is_cached_with_the_batch_ttl_and_the_item_is_not() -> None:
    prefix, specs = build.from_items("Instructions " * 400 + "\nItem: {item} (be brief)", ["apple", "pear"])
    shared = Shared(
        model="claude-haiku-5-5", max_tokens=50, system="S " * 5000, prefix=prefix, ttl="1h", min_cacheable=2048
    )
    p = build.params_for(shared, specs[1])
    assert p["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    first, last = p["messages"][0]["content"]
    assert first == {"type": "text", "text": prefix, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    assert last == {"type": "text", "text": "{item} (be brief)".replace("{item}", "pear")}
    # Identical prefix bytes across requests: that is what lets the API reuse the cache.
    q = build.params_for(shared, specs[0])
    assert q["system"] == p["system"] and q["messages"][0]["content"][0] == first


def test_short_prefix_gets_no_breakpoint_and_braces_survive() -> None:
    prefix, specs = build.from_items('Return {"label": ...} for {item}', ['a {"b"}'])
    p = build.params_for(Shared(model="m", max_tokens=5, prefix=prefix, min_cacheable=1024), specs[0])
    assert "cache_control" not in p["messages"][0]["content"][0]
    assert p["messages"][0]["content"][1]["text"] == 'a {"b"}'
    assert prefix == 'Return {"label": ...} for '


def test_files_template_fills_path_and_content_without_reinterpreting_content() -> None:
    prefix, specs = build.from_files("Summarize {path}:\n{content}", [("a.txt", "text with {path} inside")])
    assert prefix == "Summarize "
    assert specs[0].body == "a.txt:\ntext with {path} inside" and specs[0].label == "a.txt"


def test_custom_ids_round_trip_and_reject_foreign_ids() -> None:
    assert build.index_of(build.custom_id(12345)) == 12345
    assert build.index_of("x1") is None and build.index_of("i") is None


def test_upper_bound_is_never_below_the_request_bytes() -> None:
    shared = Shared(model="m", max_tokens=5, system="ß" * 10, prefix="p")
    spec = Spec(label="l", body="é" * 7)
    assert build.input_upper_bound(shared, spec) >= 20 + 1 + 14


def test_cmd_list_prints_open_batches_as_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import anyio

    from offload.cli.batches import cmd_list
    from offload.config.settings import Settings, shipped
    from offload.infra.ledger import batches as store
    from offload.infra.ledger import budgets
    from offload.infra.ledger.db import Ledger

    async def seed() -> None:
        led = await Ledger.open(tmp_path / "l.db")
        try:
            hold = await budgets.reserve(led, "s", 7, budgets.BudgetLimits())
            nb = store.NewBatch("b_list", "s", "p", "cheap", "claude-haiku-5-5", "claude-opus-5-5", 1, 7, 5, 9, "{}")
            await store.create(led, nb, [(0, 0, "a", "a", None, 7)], [1], hold)
        finally:
            await led.close()

    anyio.run(seed)
    settings = Settings(policy_path=shipped("default.yaml"), db_path=tmp_path / "l.db", session_id="s", roots=())
    assert cmd_list(settings) == 0
    table = capsys.readouterr().out
    assert "b_list" in table and "0/1" in table and "claude-haiku-5-5" in table
    assert cmd_list(settings, as_json=True) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == "b_list" and row["typical_usd"] == "0.000000000005" and row["state"] == "open"
    missing = Settings(policy_path=shipped("default.yaml"), db_path=tmp_path / "none.db", session_id="s", roots=())
    assert cmd_list(missing) == 0 and "no batches yet" in capsys.readouterr().out
