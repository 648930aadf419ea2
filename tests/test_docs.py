"""Tests that keep the README honest: names, commands, snippets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from offload.cli.main import _parser
from offload.config.policy import parse_policy
from offload.config.pricing import load_prices
from offload.mcp.tools import build_tools

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.DOTALL)


def test_every_tool_is_documented_with_its_arguments() -> None:
    for tool in build_tools():
        row = next((ln for ln in README.splitlines() if ln.startswith(f"| `{tool.name}(")), None)
        assert row is not None, f"README's Tools table lacks {tool.name}"
        for arg in tool.parameters.get("properties", {}):
            assert arg in row, f"README's row for {tool.name} does not mention {arg}"


def test_every_cli_command_is_documented() -> None:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"offload {name}" in README, f"README never shows `offload {name}`"


def test_every_environment_variable_is_documented() -> None:
    source = (ROOT / "server" / "offload" / "config" / "settings.py").read_text()
    for var in sorted(set(re.findall(r'"((?:OFFLOAD|ANTHROPIC)_[A-Z_]+)"', source))):
        assert f"`{var}`" in README, f"README's configuration table lacks {var}"


def test_the_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r'README_TEST_CMD="(.*)"', ci)
    assert command is not None
    assert command.group(1) in README


def test_json_snippets_and_the_desktop_example_parse() -> None:
    for block in _blocks("json"):
        json.loads(block)
    config = json.loads((ROOT / "claude_desktop_config.example.json").read_text())
    assert config["mcpServers"]["offload"]["args"] == ["serve"]


def test_the_policy_snippet_is_a_valid_policy() -> None:
    (snippet,) = [b for b in _blocks("yaml") if b.startswith("name: default")]
    policy = parse_policy(snippet, "README.md", known_models=load_prices().models)
    assert policy.tiers["cheap"] == "claude-haiku-5-5"


@pytest.mark.parametrize(
    "key", ["prompt_matches", "input_tokens_under", "forced_tiers", "triage", "store_text", "infer_task"]
)
def test_policy_keys_named_in_the_readme_exist(key: str) -> None:
    from offload.policy.models import Policy, When

    assert key in Policy.model_fields or key in When.model_fields
    assert key in README


def test_version_flag_and_every_spend_grouping_are_documented() -> None:
    assert "offload --version" in README
    spend = next(a for a in _parser()._actions if a.dest == "command").choices["spend"]  # type: ignore[index]
    by = next(a for a in spend._actions if a.dest == "by")
    for choice in by.choices:
        assert choice in README.split("offload spend --by", 1)[1].split("\n", 1)[0], f"--by {choice} undocumented"


def test_the_serve_startup_error_shown_is_what_serve_prints(tmp_path: Path) -> None:
    (shown,) = [b.strip() for b in _blocks("text") if b.startswith("offload serve:")]
    shown_path = shown.split("policy ", 1)[1].split(":", 1)[0]
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        re.sub(r"(?m)^default_tier: \w+", "default_tier: cheep", (ROOT / "policies" / "default.yaml").read_text())
    )
    offload = Path(sys.executable).with_name("offload")
    done = subprocess.run(
        [str(offload), "serve", "--policy", str(policy), "--db", str(tmp_path / "l.db")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == shown.replace(shown_path, str(policy))
