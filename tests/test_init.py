"""`offload init` in a clean temp HOME without the `claude` CLI: the print-the-command path.

Real subprocesses, real files; idempotence is checked by comparing the whole file tree.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

OFFLOAD = shutil.which("offload") or str(Path(sys.executable).with_name("offload"))


@pytest.fixture
def box(tmp_path: Path) -> Path:
    for d in ("home", "project"):
        (tmp_path / d).mkdir()
    return tmp_path


def _env(box: Path) -> dict[str, str]:
    home = box / "home"
    # PATH holds offload's own directory and the system tools, never a `claude`.
    return {
        "PATH": os.pathsep.join([str(Path(OFFLOAD).parent), "/usr/bin", "/bin"]),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
    }


def _run(box: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("claude", path=_env(box)["PATH"]) is None, "a claude CLI is on the test PATH"
    return subprocess.run(
        [OFFLOAD, "init", *args], capture_output=True, text=True, timeout=60, env=_env(box), cwd=box / "project"
    )


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _printed_command(out: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("claude mcp add"))
    return shlex.split(line)


def test_user_scope_writes_policy_and_skill_prints_the_exact_command_and_is_idempotent(box: Path) -> None:
    first = _run(box)
    assert first.returncode == 0, first.stderr
    home = box / "home"
    policy = home / ".config" / "offload" / "policy.yaml"
    db = home / ".local" / "share" / "offload" / "offload.db"
    skill = home / ".claude" / "skills" / "offload" / "SKILL.md"
    assert policy.is_file() and skill.is_file() and db.parent.is_dir()
    assert "`claude` command is not on PATH" in first.stdout

    cmd = _printed_command(first.stdout)
    assert cmd == [
        *["claude", "mcp", "add", "-s", "user", "offload"],
        *["-e", f"OFFLOAD_POLICY={policy}", "-e", f"OFFLOAD_DB={db}"],
        *["--", OFFLOAD, "serve"],
    ]
    assert all(Path(p).is_absolute() for p in (policy, db, cmd[-2]))

    # The policy it wrote is one `offload serve` accepts (checked with the server's own preflight).
    check = subprocess.run(
        [OFFLOAD, "policy", "check", str(policy)], capture_output=True, text=True, timeout=60, env=_env(box)
    )
    assert check.returncode == 0, check.stdout + check.stderr

    before = _tree(box)
    second = _run(box)
    assert second.returncode == 0, second.stderr
    assert _tree(box) == before  # same files, same bytes, not even rewritten
    assert "unchanged policy" in second.stdout and "unchanged skill" in second.stdout
    assert _printed_command(second.stdout) == cmd


def test_the_skill_is_valid_frontmatter_naming_the_tools(box: Path) -> None:
    assert _run(box).returncode == 0
    text = (box / "home" / ".claude" / "skills" / "offload" / "SKILL.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["name"] == "offload"
    assert 100 < len(meta["description"]) < 1536  # Claude Code truncates the listing at 1,536
    for tool in ("routed_complete", "summarize_context", "trim_result", "batch_submit", "budget_status", "redo_of"):
        assert tool in body


def test_project_scope_puts_the_skill_in_the_project_and_registers_for_it(box: Path) -> None:
    done = _run(box, "--scope", "project")
    assert done.returncode == 0, done.stderr
    assert (box / "project" / ".claude" / "skills" / "offload" / "SKILL.md").is_file()
    assert not (box / "home" / ".claude" / "skills").exists()
    assert _printed_command(done.stdout)[:6] == ["claude", "mcp", "add", "-s", "project", "offload"]


def test_an_existing_policy_is_the_users_and_is_kept(box: Path) -> None:
    policy = box / "home" / ".config" / "offload" / "policy.yaml"
    policy.parent.mkdir(parents=True)
    policy.write_text("# mine\n")
    done = _run(box)
    assert policy.read_text() == "# mine\n"
    assert f"kept      policy: {policy} (yours; not overwritten)" in done.stdout


def test_a_matching_registration_is_left_alone_and_a_different_one_is_not_clobbered(box: Path) -> None:
    home = box / "home"
    env = {
        "OFFLOAD_POLICY": str(home / ".config" / "offload" / "policy.yaml"),
        "OFFLOAD_DB": str(home / ".local" / "share" / "offload" / "offload.db"),
    }
    entry = {"type": "stdio", "command": OFFLOAD, "args": ["serve"], "env": env}
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"offload": entry}}))
    done = _run(box)
    assert "unchanged Claude Code registration (user scope)" in done.stdout
    assert "claude mcp add" not in done.stdout

    entry["env"] = {"OFFLOAD_POLICY": "/elsewhere.yaml"}
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"offload": entry}}))
    done = _run(box)
    assert "the existing 'offload' in" in done.stdout and "differs" in done.stdout
    assert "claude mcp remove -s user offload && claude mcp add" in done.stdout
    assert json.loads((home / ".claude.json").read_text())["mcpServers"]["offload"]["env"] == {
        "OFFLOAD_POLICY": "/elsewhere.yaml"
    }


def test_statusline_composes_with_the_users_own_and_shows_both_spends(box: Path) -> None:
    settings = box / "home" / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    mine = "cat > /dev/null; echo my-line"
    settings.write_text(json.dumps({"model": "opus", "statusLine": {"type": "command", "command": mine, "padding": 0}}))
    done = _run(box, "--statusline")
    assert done.returncode == 0, done.stderr
    assert "composed statusline" in done.stdout
    doc = json.loads(settings.read_text())
    assert doc["model"] == "opus" and doc["statusLine"]["padding"] == 0
    command = doc["statusLine"]["command"]
    assert command.startswith(f"{OFFLOAD} statusline --db ") and command.endswith(f"--also {shlex.quote(mine)}")

    before = _tree(box)
    assert "unchanged statusline" in _run(box, "--statusline").stdout
    assert _tree(box) == before

    # Run it the way Claude Code does: through a shell, its JSON on stdin.
    host = {"session_id": "cc-1", "cost": {"total_cost_usd": 0.4567}, "model": {"id": "claude-opus-5-5"}}
    shown = subprocess.run(
        command, shell=True, input=json.dumps(host), capture_output=True, text=True, timeout=30, env=_env(box)
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("my-line │ offload")
    assert shown.stdout.rstrip().endswith("host $0.46")


def test_a_statusline_from_an_offload_elsewhere_is_replaced_not_nested(box: Path) -> None:
    # After a reinstall (venv -> pipx) offload's path changes; composing with the old offload
    # line would show offload twice and nest one --also inside another on every re-init.
    settings = box / "home" / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    mine = "cat > /dev/null; echo my-line"
    old = f"/old/venv/bin/offload statusline --db /old/offload.db --also {shlex.quote(mine)}"
    settings.write_text(json.dumps({"statusLine": {"type": "command", "command": old}}))
    done = _run(box, "--statusline")
    assert done.returncode == 0, done.stderr
    command = json.loads(settings.read_text())["statusLine"]["command"]
    assert command.startswith(f"{OFFLOAD} statusline --db ") and command.endswith(f"--also {shlex.quote(mine)}")
    assert "/old/" not in command and command.count("--also") == 1
    assert f"replaced statusline: {settings}" in done.stdout
    # An old offload line of its own (nothing composed) becomes just ours.
    settings.write_text(json.dumps({"statusLine": {"type": "command", "command": "/x/offload statusline --db /x.db"}}))
    _run(box, "--statusline")
    assert "--also" not in json.loads(settings.read_text())["statusLine"]["command"]
