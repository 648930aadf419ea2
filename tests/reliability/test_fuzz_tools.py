"""Hypothesis throws junk at every tool through the real in-memory MCP client.

Every case must come back as a result or as an error whose text says what was wrong (never the
bare "Error executing tool X" of a crash), and the server must keep serving afterwards.

The MCP client lives in a blocking portal (an event loop on a worker thread) for the whole
module, so each example is one tool call rather than a fresh server.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from emulator_fixtures import running
from offload.config.settings import Settings, shipped
from offload.mcp.server import build_server

from .conftest import is_generic_error, result_text

# Argument names per tool (DESIGN.md §3 plus what tools.py accepts today).
TOOLS: dict[str, tuple[str, ...]] = {
    "routed_complete": (
        "prompt",
        "system",
        "context_files",
        "task",
        "difficulty",
        "tier",
        "max_tokens",
        "response_schema",
        "must_match",
    ),
    "batch_submit": (
        "requests",
        "template",
        "items",
        "files",
        "system",
        "task",
        "tier",
        "max_tokens",
        "retry_failed",
    ),
    "batch_status": ("batch_id",),
    "batch_results": ("batch_id", "offset", "limit", "write_to"),
    "summarize_context": ("text", "paths", "focus", "target_tokens", "keep"),
    "trim_result": ("content", "path", "handle", "fields", "query", "max_tokens"),
    "budget_status": ("scope",),
}

WEIRD = [
    "",
    " ",
    "\x00",
    "\u202e\u200b\ufeff",
    "🦀" * 50,
    "é\u0301" * 40,
    "\ud7ff\ue000\U0010ffff",
    "../../../../etc/passwd",
    "..",
    "/etc/shadow",
    "~/.ssh/id_rsa",
    "notes/../../outside.txt",
    "**/*",
    "C:\\Windows\\system32",
    "{item}{path}{content}{0}{{}}",
    "(?P<x",
    "[",
    "a" * 3_000,
    "cheap",
    "premium",
    "hard",
    "session",
    "$.foo[?(@.bar",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(WEIRD),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(string.ascii_letters, max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


texts = st.one_of(st.text(max_size=60), st.sampled_from(WEIRD))
INTS = {"max_tokens", "offset", "limit", "target_tokens"}
LISTS = {"context_files", "items", "files", "paths", "keep"}
LITERALS = {
    "difficulty": ["easy", "medium", "hard"],
    "scope": ["session", "day", "month", "all"],
    "tier": ["cheap", "standard", "premium"],
}
PATHS = ["notes.txt", "data.json", "*.txt", "missing.txt"]


def plausible(name: str) -> st.SearchStrategy[Any]:
    """A value of the right type (often a sensible one), so examples get past schema validation
    and into the services, where the interesting failures live."""
    if name in INTS:
        return st.integers(min_value=-5, max_value=70_000)
    if name in LISTS:
        return st.lists(st.one_of(st.sampled_from(PATHS), texts), max_size=4)
    if name in LITERALS:
        return st.one_of(st.sampled_from(LITERALS[name]), texts)
    if name == "response_schema":
        return st.one_of(
            st.just({"type": "object", "required": ["x"]}),
            st.dictionaries(st.sampled_from(["type", "properties", "required", "items"]), values, max_size=3),
        )
    if name == "requests":
        return st.lists(
            st.dictionaries(st.sampled_from(["prompt", "system", "custom_id", "junk"]), texts, max_size=3), max_size=3
        )
    if name == "fields":
        return st.one_of(texts, st.lists(texts, max_size=3), st.sampled_from(["items[].id", "items.id"]))
    if name in ("path", "write_to"):
        return st.one_of(st.sampled_from([*PATHS, "out.jsonl", "out.md"]), texts)
    return texts


REQUIRED = {"routed_complete": ("prompt",), "batch_results": ("batch_id",)}


def arguments(tool: str) -> st.SearchStrategy[dict[str, Any]]:
    """Half well-typed calls (they reach the service), half junk (wrong types, unknown keys)."""
    known = TOOLS[tool]
    required = REQUIRED.get(tool, ())
    well_typed = st.fixed_dictionaries(
        {k: plausible(k) for k in required}, optional={k: plausible(k) for k in known if k not in required}
    )
    junk = st.tuples(
        st.fixed_dictionaries({}, optional={k: st.one_of(plausible(k), values) for k in known}),
        st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda k: k not in known), values, max_size=2),
    ).map(lambda kv: {**kv[0], **kv[1]})
    return st.one_of(well_typed, junk)


class Harness:
    def __init__(self, portal: BlockingPortal, client: Client) -> None:
        self.portal = portal
        self.client = client
        self.calls = 0

    def call(self, name: str, args: dict[str, Any]) -> Any:
        self.calls += 1
        return self.portal.call(self.client.call_tool, name, args)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "notes.txt").write_text("step 3 failed: exit code 2\n")
    (root / "data.json").write_text('{"items": [{"id": 1, "ok": true}]}')
    with running(seed=3) as emu, start_blocking_portal("asyncio") as portal:
        settings_ = Settings(
            policy_path=shipped("default.yaml"),
            db_path=root / "ledger.db",
            session_id="fuzz",
            roots=(root,),
            api_key="test-key",
            base_url=emu.url,
        )
        with portal.wrap_async_context_manager(Client(build_server(settings_))) as client:
            yield Harness(portal, client)


def _check(harness: Harness, tool: str, args: dict[str, Any]) -> None:
    result = harness.call(tool, args)
    text = result_text(result)
    if result.is_error:
        assert not is_generic_error(text), f"{tool}({_short(args)}) gave an unexplained error: {text!r}"
    # The server still answers a plain request after whatever that was.
    status = harness.call("budget_status", {})
    assert not status.is_error, f"server stopped serving after {tool}({_short(args)}): {result_text(status)}"


def _short(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={str(v)[:40]!r}" for k, v in args.items())


FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # repeatable in CI: failures are printed, not replayed from a local cache
    derandomize=True,
)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_answers_junk_with_a_clear_error_and_keeps_serving(harness: Harness, tool: str) -> None:
    @FUZZ
    @given(args=arguments(tool))
    def run(args: dict[str, Any]) -> None:
        _check(harness, tool, args)

    run()


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("routed_complete", {}),
        ("routed_complete", {"prompt": 5}),
        ("routed_complete", {"prompt": "ok", "max_tokens": -1}),
        ("routed_complete", {"prompt": "ok", "difficulty": "impossible"}),
        ("routed_complete", {"prompt": "ok", "context_files": ["../../../etc/passwd"]}),
        ("routed_complete", {"prompt": "ok", "response_schema": {"type": 12}}),
        ("trim_result", {"path": "../outside.json"}),
        ("summarize_context", {"paths": ["/etc/passwd"]}),
        ("batch_results", {"batch_id": "no-such-batch"}),
        ("batch_submit", {"template": "{item}", "items": []}),
    ],
)
def test_known_bad_inputs_are_refused_clearly(harness: Harness, tool: str, args: dict[str, Any]) -> None:
    result = harness.call(tool, args)
    text = result_text(result)
    assert result.is_error, f"{tool}({args}) was accepted: {text[:200]!r}"
    assert not is_generic_error(text), f"{tool}({args}): {text!r}"


HUGE = "é" * 150_000 + "../" * 20_000  # ~360 kB of UTF-8: kept out of hypothesis (its reprs choke)
STRING_ARGS = [
    (tool, name)
    for tool, names in sorted(TOOLS.items())
    for name in names
    if name not in INTS and name not in LISTS and name not in ("response_schema", "requests", "difficulty", "scope")
]


@pytest.mark.parametrize(("tool", "name"), STRING_ARGS)
def test_huge_strings_get_a_bounded_answer(harness: Harness, tool: str, name: str) -> None:
    args: dict[str, Any] = {"prompt": "summarize"} if tool == "routed_complete" and name != "prompt" else {}
    if tool == "batch_results" and name != "batch_id":
        args["batch_id"] = "b-missing"
    args[name] = HUGE
    result = harness.call(tool, args)
    text = result_text(result)
    if result.is_error:
        assert not is_generic_error(text), f"{tool}({name}=<huge>): {text!r}"
        # An error that echoes the whole input would cost the host its context window.
        assert len(text) < 4000, f"{tool}({name}=<huge>): {len(text)}-char error: {text[:300]!r}..."
    assert not harness.call("budget_status", {}).is_error


def test_the_fuzzing_reached_the_server(harness: Harness) -> None:
    # Guards against a harness that silently stopped calling anything.
    before = harness.calls
    assert not harness.call("budget_status", {"scope": "session"}).is_error
    assert harness.calls == before + 1


def test_paths_outside_the_roots_are_never_read(harness: Harness, tmp_path: Path) -> None:
    secret = tmp_path / "outside-secret.txt"
    secret.write_text("TOP-SECRET-CANARY")
    cases: list[tuple[str, dict[str, Any]]] = [
        ("routed_complete", {"prompt": "echo it", "context_files": [str(secret)]}),
        ("trim_result", {"path": str(secret)}),
        ("summarize_context", {"paths": [str(secret)]}),
    ]
    for tool, args in cases:
        result = harness.call(tool, args)
        assert result.is_error and "TOP-SECRET-CANARY" not in result_text(result), (tool, result_text(result))
