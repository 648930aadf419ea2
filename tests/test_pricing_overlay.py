"""OFFLOAD_PRICING: a user's price file merged over the shipped table, with the same exactness checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.errors import ConfigError
from offload.core.pricing import Usage

OFFLOAD = shutil.which("offload") or str(Path(sys.executable).with_name("offload"))

OVERLAY = """\
models:
  claude-haiku-5-5:          # a negotiated rate replaces the whole shipped entry
    as_of: "2026-11-01"
    input: "0.08"
    cache_write_5m: "0.10"
    cache_write_1h: "0.16"
    cache_read: "0.008"
    output: "0.40"
    min_cacheable_tokens: 2048
  claude-inhouse-1:          # a model the shipped table does not know
    as_of: "2026-11-01"
    input: "1"
    cache_write_5m: "1.25"
    cache_write_1h: "2"
    cache_read: "0.10"
    output: "3"
    min_cacheable_tokens: 1024
"""

POLICY = """\
name: inhouse
tiers: {cheap: claude-inhouse-1, standard: claude-sonnet-5-5}
rules: []
default_tier: cheap
baseline: claude-opus-5-5
"""


def test_overlay_replaces_and_adds_models_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(OVERLAY)
    table = load_prices(overlay=tmp_path / "mine.yaml")
    # 1000 x 80_000 + 200 x 400_000 (pusd per token)
    assert table.cost("claude-haiku-5-5", Usage(input_tokens=1000, output_tokens=200)) == 160_000_000
    assert table.cost("claude-inhouse-1", Usage(input_tokens=1000, output_tokens=200)) == 1_600_000_000
    # untouched shipped entry, batch at the shipped 50%: 1000 x 2_000_000 x 0.5
    assert table.cost("claude-sonnet-5-5", Usage(input_tokens=1000), batch=True) == 1_000_000_000
    assert set(load_prices().models) < set(table.models)


def test_an_inexact_user_rate_is_refused_naming_the_file(tmp_path: Path) -> None:
    bad = OVERLAY.replace('input: "1"', 'input: "0.0000001"')  # 0.1 pusd per token: not a whole pusd
    (tmp_path / "mine.yaml").write_text(bad)
    with pytest.raises(ConfigError) as info:
        load_prices(overlay=tmp_path / "mine.yaml")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'mine.yaml'} (over the shipped pricing.yaml)")
    assert "models.claude-inhouse-1.input" in message


def test_settings_read_offload_pricing(tmp_path: Path) -> None:
    assert Settings.from_env({"OFFLOAD_PRICING": str(tmp_path / "p.yaml")}).pricing_path == tmp_path / "p.yaml"
    assert Settings.from_env({}).pricing_path is None


def test_a_policy_on_a_user_priced_model_passes_only_with_the_overlay(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(OVERLAY)
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    cmd = [OFFLOAD, "policy", "check", str(tmp_path / "policy.yaml")]
    without = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert without.returncode == 1 and "'claude-inhouse-1' has no price" in without.stdout + without.stderr
    env["OFFLOAD_PRICING"] = str(tmp_path / "mine.yaml")
    with_overlay = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert with_overlay.returncode == 0, with_overlay.stdout + with_overlay.stderr
