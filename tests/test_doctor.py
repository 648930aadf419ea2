"""`offload doctor` as a user runs it: a real subprocess against the emulator, a temp HOME."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from offload_emulator.server import EmulatorHandle

OFFLOAD = shutil.which("offload") or str(Path(sys.executable).with_name("offload"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A clean HOME where Claude Code (user scope) runs offload by its absolute path."""
    h = tmp_path / "home"
    h.mkdir()
    config = {"mcpServers": {"offload": {"type": "stdio", "command": OFFLOAD, "args": ["serve"], "env": {}}}}
    (h / ".claude.json").write_text(json.dumps(config))
    (tmp_path / "project").mkdir()
    return h


def _doctor(home: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": str(Path(OFFLOAD).parent),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        **env_extra,
    }
    return subprocess.run(
        [OFFLOAD, "doctor"], capture_output=True, text=True, timeout=90, env=env, cwd=home.parent / "project"
    )


def _lines(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {line.split()[1]: line for line in done.stdout.splitlines()}


def test_every_check_passes_against_the_emulator(home: Path, emulator: EmulatorHandle) -> None:
    done = _doctor(home, ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=emulator.url)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = _lines(done)
    assert list(lines) == ["key", "api", "policy", "ledger", "roots", "hosts"]
    assert all(line.startswith("ok ") for line in lines.values()), done.stdout
    assert f"{emulator.url} answered with" in lines["api"]
    assert "every model priced" in lines["policy"]
    assert str(home / ".local" / "share" / "offload" / "offload.db") in lines["ledger"]
    assert f"{home / '.claude.json'} (user scope): {OFFLOAD} serve" in lines["hosts"]
    assert "test-key" not in done.stdout + done.stderr


def test_a_rejected_key_says_so(home: Path, running: Callable[..., Any]) -> None:
    with running(api_key="the-right-key") as emu:
        done = _doctor(home, ANTHROPIC_API_KEY="a-wrong-key", ANTHROPIC_BASE_URL=emu.url)
    assert done.returncode == 1
    line = _lines(done)["api"]
    assert line.startswith("FAIL api")
    assert f"{emu.url} rejected the key (401 authentication_error): check ANTHROPIC_API_KEY" in line
    assert "a-wrong-key" not in done.stdout + done.stderr


def test_an_unreachable_url_says_so(home: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    done = _doctor(home, ANTHROPIC_API_KEY="k", ANTHROPIC_BASE_URL=url)
    assert done.returncode == 1
    assert _lines(done)["api"] == f"FAIL api      cannot reach {url}: check ANTHROPIC_BASE_URL and the network"


def test_missing_key_bad_policy_and_no_registration_each_fail_with_a_fix(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (tmp_path / "project").mkdir()
    (tmp_path / "p.yaml").write_text(
        "name: x\ntiers: {cheap: claude-nope-1}\ndefault_tier: cheap\nbaseline: claude-nope-1\n"
    )
    done = _doctor(bare, OFFLOAD_POLICY=str(tmp_path / "p.yaml"), OFFLOAD_ROOTS=str(tmp_path / "gone"))
    assert done.returncode == 1
    lines = _lines(done)
    assert lines["key"].startswith("FAIL key") and "ANTHROPIC_API_KEY is not set" in lines["key"]
    assert lines["api"].startswith("skip api")
    assert lines["policy"].startswith("FAIL policy") and "'claude-nope-1' has no price" in lines["policy"]
    assert lines["roots"] == f"FAIL roots    {tmp_path / 'gone'} is not a directory: fix OFFLOAD_ROOTS"
    assert lines["hosts"].startswith("FAIL hosts") and lines["hosts"].endswith("run `offload init`")
    assert lines["ledger"].startswith("ok ")


def test_a_registration_whose_command_is_gone_fails(home: Path, emulator: EmulatorHandle) -> None:
    gone = str(home / "old-venv" / "bin" / "offload")
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"offload": {"command": gone, "args": ["serve"]}}}))
    done = _doctor(home, ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=emulator.url)
    assert done.returncode == 1
    assert f"command {gone!r} not found" in _lines(done)["hosts"]
    assert os.path.exists(OFFLOAD)


@pytest.mark.parametrize("where", ["project", "desktop"])
def test_project_scope_and_claude_desktop_registrations_are_found(
    home: Path, emulator: EmulatorHandle, where: str
) -> None:
    (home / ".claude.json").unlink()
    entry = {"mcpServers": {"cheap-claude": {"command": OFFLOAD, "args": ["serve"]}}}
    if where == "project":
        path = home.parent / "project" / ".mcp.json"
    else:
        path = home / ".config" / "Claude" / "claude_desktop_config.json"  # Linux: $XDG_CONFIG_HOME/Claude
        path.parent.mkdir(parents=True)
    path.write_text(json.dumps(entry))
    done = _doctor(home, ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=emulator.url)
    assert done.returncode == 0, done.stdout
    assert f"{path} (" in _lines(done)["hosts"]
