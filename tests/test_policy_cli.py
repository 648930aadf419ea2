"""`offload policy check|explain` as a user runs them: a real subprocess, exit codes and output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from offload.config.pricing import load_prices
from offload.core.money import fmt_usd
from offload.core.tokens import request_upper_bound

POLICIES = Path(__file__).resolve().parent.parent / "policies"
OFFLOAD = str(Path(sys.executable).with_name("offload"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OFFLOAD, *args], capture_output=True, text=True, timeout=60, check=False)


def test_check_all_shipped_policies() -> None:
    files = [str(POLICIES / n) for n in ("default.yaml", "frugal.yaml", "quality.yaml", "legacy-4x.yaml")]
    res = run("policy", "check", *files)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0] == (
        f"ok {files[0]} (default: 5 rules, tiers cheap=claude-haiku-5-5 standard=claude-sonnet-5-5 "
        "premium=claude-opus-5-5)"
    )
    assert res.stderr == ""


def test_check_reports_bad_file_and_still_checks_the_rest(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((POLICIES / "default.yaml").read_text().replace("tier: premium", "tier: premum", 1))
    unpriced = tmp_path / "unpriced.yaml"
    unpriced.write_text((POLICIES / "default.yaml").read_text().replace("claude-haiku-5-5", "claude-haiku-7"))
    good = str(POLICIES / "default.yaml")
    res = run("policy", "check", str(bad), str(unpriced), good)
    assert res.returncode == 1
    assert f"policy {bad}: rules[1].tier: unknown tier 'premum'" in res.stderr
    assert "'claude-haiku-7' has no price in pricing.yaml" in res.stderr
    assert res.stdout.startswith(f"ok {good} ")


def test_explain_shows_tier_rule_ladder_and_worst_case() -> None:
    prompt = "Is this email spam? WIN A PRIZE"
    res = run("policy", "explain", str(POLICIES / "default.yaml"), prompt, "--task", "classify")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "tier       cheap -> claude-haiku-5-5" in out
    assert "rule       rules[0] mechanical {task: [classify, extract, summarize, trim]}" in out
    assert "max_tokens 4096" in out
    assert "escalation standard -> premium" in out
    tokens = request_upper_bound([prompt])
    worst = load_prices().worst_case("claude-haiku-5-5", tokens, 4096)
    assert f"worst case {fmt_usd(worst)} for <= {tokens} input tokens + 4096 output" in out


def test_explain_difficulty_routes_to_premium() -> None:
    res = run("policy", "explain", str(POLICIES / "default.yaml"), "design a cache", "--difficulty", "hard")
    assert res.returncode == 0, res.stderr
    assert "tier       premium -> claude-opus-5-5" in res.stdout
    assert "escalation (none)" in res.stdout


def test_explain_says_when_the_prompt_names_the_task() -> None:
    res = run("policy", "explain", str(POLICIES / "default.yaml"), "Summarize this build log")
    assert res.returncode == 0, res.stderr
    assert "task       summarize (no --task given: read from the prompt's first word)" in res.stdout
    assert "tier       cheap -> claude-haiku-5-5" in res.stdout
    given = run("policy", "explain", str(POLICIES / "default.yaml"), "Summarize this build log", "--task", "code")
    assert "task       " not in given.stdout and "tier       standard" in given.stdout


def test_explain_bad_file_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("name: [\n")
    res = run("policy", "explain", str(bad), "hi")
    assert res.returncode == 1
    assert "YAML syntax error" in res.stderr and str(bad) in res.stderr
