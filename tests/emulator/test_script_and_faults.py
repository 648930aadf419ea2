"""Scripted replies, fault injection (with SDK retries) and seed repeatability."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest

from emulator_fixtures import running
from offload_emulator import FaultSpec, FaultSpecError, Script, ScriptError
from offload_emulator.server import EmulatorHandle

HAIKU = "claude-haiku-5-5"
SCRIPT = """
- match: "(?i)refuse"
  reply: "I can't help with that."
  stop_reason: refusal
- model: "claude-opus-.*"
  match: "plan"
  reply: "Opus plan."
  output_tokens: 42
- match: "flaky"
  times: 2
  error: {status: 529, type: overloaded_error, message: "scripted overload"}
- match: "once"
  times: 1
  reply: "first time only"
"""


def ask(c: anthropic.Anthropic, text: str, model: str = HAIKU, max_tokens: int = 100) -> anthropic.types.Message:
    return c.messages.create(model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": text}])


def test_scripted_replies_and_times(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(SCRIPT)
    with running(script=str(path)) as emu, anthropic.Anthropic(base_url=emu.url, api_key="k") as c:
        refused = ask(c, "please REFUSE this")
        assert refused.stop_reason == "refusal" and refused.content[0].text == "I can't help with that."  # type: ignore[union-attr]
        plan = ask(c, "make a plan", model="claude-opus-5-5")
        assert plan.content[0].text == "Opus plan." and plan.usage.output_tokens == 42  # type: ignore[union-attr]
        assert ask(c, "make a plan").content[0].text.startswith("Emulated answer")  # type: ignore[union-attr]
        assert ask(c, "once").content[0].text == "first time only"  # type: ignore[union-attr]
        assert ask(c, "once").content[0].text != "first time only"  # type: ignore[union-attr]
        # Two scripted 529s are consumed by the SDK's two retries; the third attempt succeeds.
        assert ask(c, "flaky").stop_reason == "end_turn"
        statuses = [r.status for r in emu.state.calls("/v1/messages")][-3:]
        assert statuses == [529, 529, 200]


def test_script_errors_name_the_file_and_rule(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- match: ok\n  reply: fine\n- reply: x\n  stop_reason: bored\n")
    with pytest.raises(ScriptError, match=r"bad\.yaml: rule 1: stop_reason"):
        Script.load(path)
    with pytest.raises(ScriptError, match=r"rule 0: unknown key"):
        Script.load([{"mtach": "x"}])
    with pytest.raises(ScriptError, match="not a valid regex"):
        Script.load([{"match": "("}])
    with pytest.raises(ScriptError, match="rule 0: 'tool_use' must be a mapping with a string 'name'"):
        Script.load([{"tool_use": {"input": {}}}])
    with pytest.raises(ScriptError, match="sets stop_reason itself"):
        Script.load([{"tool_use": {"name": "f"}, "stop_reason": "end_turn"}])


def test_stop_sequences_and_max_tokens(emulator: EmulatorHandle, client: anthropic.Anthropic) -> None:
    emulator.state.set_script([{"reply": "alpha beta END gamma"}])
    msg = client.messages.create(
        model=HAIKU, max_tokens=50, stop_sequences=["END"], messages=[{"role": "user", "content": "x"}]
    )
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "END"
    assert msg.content[0].text == "alpha beta "  # type: ignore[union-attr]


def test_429_and_529_are_retried_by_the_sdk(emulator: EmulatorHandle, client: anthropic.Anthropic) -> None:
    emulator.state.faults.force(429, 529)
    msg = ask(client, "hello")
    assert msg.stop_reason == "end_turn"
    calls = emulator.state.calls("/v1/messages")
    assert [(r.status, r.fault, r.retry_count) for r in calls] == [
        (429, "429", 0),
        (529, "529", 1),
        (200, None, 2),
    ]
    assert emulator.state.faults.injected["429"] == 1 and emulator.state.faults.injected["529"] == 1


def test_429_carries_retry_after(emulator: EmulatorHandle) -> None:
    emulator.state.faults.force(429)
    c = anthropic.Anthropic(base_url=emulator.url, api_key="k", max_retries=0)
    with c, pytest.raises(anthropic.RateLimitError) as info:
        ask(c, "hi")
    headers = info.value.response.headers
    assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "20"
    assert headers["request-id"] == info.value.request_id


def test_drop_is_a_connection_error_and_is_retried(emulator: EmulatorHandle, client: anthropic.Anthropic) -> None:
    emulator.state.faults.force("drop")
    assert ask(client, "hello").stop_reason == "end_turn"
    calls = emulator.state.calls("/v1/messages")
    assert [(r.fault, r.status) for r in calls] == [("drop", None), (None, 200)]
    emulator.state.faults.force("drop")
    c = anthropic.Anthropic(base_url=emulator.url, api_key="k", max_retries=0)
    with c, pytest.raises(anthropic.APIConnectionError):
        ask(c, "hello")


def test_seeded_faults_repeat_exactly() -> None:
    def run() -> list[tuple[str | None, str]]:
        with running(seed=7, faults="429=0.3,500=0.2,latency=1-3ms") as emu:
            with anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=5) as c:
                ids = [ask(c, f"q{i}").id for i in range(6)]
            return [(r.fault, r.request_id) for r in emu.state.requests] + [(None, i) for i in ids]

    first = run()
    assert any(fault for fault, _ in first)
    assert run() == first


def test_fault_spec_grammar() -> None:
    spec = FaultSpec.parse("429=0.1,529=0.05,500=0.05,drop=0.02,latency=20-80ms")
    assert dict(spec.rates) == {"429": 0.1, "529": 0.05, "500": 0.05, "drop": 0.02}
    assert spec.latency_s == (0.02, 0.08)
    assert FaultSpec.parse("latency=1.5s").latency_s == (1.5, 1.5)
    for bad in ("418=0.1", "429=2", "429=0.6,500=0.6", "latency=fast", "drop"):
        with pytest.raises(FaultSpecError):
            FaultSpec.parse(bad)
