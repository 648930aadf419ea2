"""Hot reload on real files: edits apply on the next check, broken edits keep the last good policy."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from offload.config.policy import PolicyHolder
from offload.core.errors import ConfigError

GOOD = """
name: {name}
tiers: {{cheap: claude-haiku-5-5, premium: claude-opus-5-5}}
default_tier: {tier}
baseline: claude-opus-5-5
"""


def edit(path: Path, text: str) -> None:
    """Rewrite the file and move its mtime on, so a coarse-mtime filesystem cannot hide the edit."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD.format(name="one", tier="cheap"))
    return path


def test_unchanged_file_is_not_reloaded(policy_file: Path) -> None:
    holder = PolicyHolder(policy_file)
    first = holder.current
    assert holder.path == policy_file
    assert holder.check_reload() is False
    assert holder.current is first and holder.error is None


def test_edit_is_seen_on_next_check(policy_file: Path) -> None:
    holder = PolicyHolder(policy_file)
    edit(policy_file, GOOD.format(name="two", tier="premium"))
    assert holder.check_reload() is True
    assert (holder.current.name, holder.current.default_tier) == ("two", "premium")
    assert holder.check_reload() is False


def test_same_size_same_mtime_rewrite_via_rename_is_seen(policy_file: Path) -> None:
    # editors often write a new file and rename it over the old one: a new inode, same size
    holder = PolicyHolder(policy_file)
    st = policy_file.stat()
    new = policy_file.with_suffix(".tmp")
    new.write_text(GOOD.format(name="eno", tier="cheap"))  # same length as "one"
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, policy_file)
    assert holder.check_reload() is True
    assert holder.current.name == "eno"


def test_broken_edit_keeps_last_good_and_sets_error(policy_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    holder = PolicyHolder(policy_file)
    edit(policy_file, GOOD.format(name="two", tier="gold"))
    with caplog.at_level(logging.WARNING, logger="offload.policy"):
        assert holder.check_reload() is False
    assert holder.current.name == "one"
    assert holder.error is not None
    assert str(policy_file) in holder.error and "default_tier: unknown tier 'gold'" in holder.error
    assert any("default_tier" in r.getMessage() for r in caplog.records)
    # the broken file is not re-parsed (nor re-logged) on every call
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="offload.policy"):
        assert holder.check_reload() is False
    assert not caplog.records

    edit(policy_file, "name: [broken\n")
    assert holder.check_reload() is False
    assert "YAML syntax error" in (holder.error or "")

    edit(policy_file, GOOD.format(name="three", tier="premium"))
    assert holder.check_reload() is True
    assert holder.current.name == "three" and holder.error is None


def test_deleted_file_keeps_last_good(policy_file: Path) -> None:
    holder = PolicyHolder(policy_file)
    policy_file.unlink()
    assert holder.check_reload() is False
    assert holder.current.name == "one"
    assert "missing" in (holder.error or "")
    policy_file.write_text(GOOD.format(name="back", tier="cheap"))
    assert holder.check_reload() is True
    assert holder.current.name == "back" and holder.error is None


def test_unknown_model_on_reload_is_an_error(policy_file: Path) -> None:
    holder = PolicyHolder(policy_file, known_models={"claude-haiku-5-5", "claude-opus-5-5"})
    edit(policy_file, GOOD.format(name="two", tier="cheap").replace("claude-haiku-5-5", "claude-haiku-3"))
    assert holder.check_reload() is False
    assert "claude-haiku-3" in (holder.error or "") and "pricing.yaml" in (holder.error or "")


def test_initial_load_failure_raises_clearly(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.format(name="x", tier="gold"))
    with pytest.raises(ConfigError, match=r"p\.yaml: default_tier: unknown tier 'gold'"):
        PolicyHolder(path)
    with pytest.raises(ConfigError, match="file not found"):
        PolicyHolder(tmp_path / "absent.yaml")
