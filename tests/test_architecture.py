"""The tree is the architecture: layers hold (import-linter), there are no import cycles, and
nothing dodges one with a function-local import."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"
PACKAGES = ("offload", "offload_emulator")
# The CLI entry point imports each command's module when that command runs, so `offload
# statusline` (run on every prompt redraw) never pays for mcp, anthropic or rich. These are
# the only function-local imports of offload modules allowed: none of them breaks a cycle.
LAZY_FOR_STARTUP = {"offload/cli/main.py"}


def _modules() -> list[str]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((SERVER / pkg).rglob("*.py")):
            rel = path.relative_to(SERVER).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            if rel.name != "__main__":
                out.append(".".join(parts))
    return out


def test_every_module_imports_first_in_a_fresh_interpreter_state() -> None:
    """Each module, imported before any other offload module, imports cleanly (no cycle)."""
    mods = _modules()
    assert len(mods) > 60
    script = (
        "import importlib, sys\n"
        f"mods = {mods!r}\n"
        "base = set(sys.modules)\n"
        "for m in mods + mods[::-1]:\n"
        "    ours = [k for k in sys.modules if k not in base and k.split('.')[0] in ('offload', 'offload_emulator')]\n"
        "    for k in ours:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module(m)\n"
        "print('ok', len(mods))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"ok {len(mods)}"


def test_no_function_local_imports_of_offload_modules() -> None:
    found = []
    for pkg in PACKAGES:
        for path in sorted((SERVER / pkg).rglob("*.py")):
            rel = str(path.relative_to(SERVER))
            if rel in LAZY_FOR_STARTUP:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.level or (sub.module or "").startswith(PACKAGES)):
                        found.append(f"{rel}:{sub.lineno} in {node.name}: {sub.module}")
    assert found == []


def _lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(exe)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_import_contracts_hold_and_a_violation_breaks_them(tmp_path: Path) -> None:
    clean = _lint_imports(ROOT, SERVER)
    assert clean.returncode == 0, clean.stdout[-3000:]
    assert clean.stdout.count(" KEPT") >= 4 and "BROKEN" not in clean.stdout

    # The same tree with one service importing mcp: the contracts must catch it.
    copy = tmp_path / "repo"
    shutil.copytree(SERVER, copy / "server", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    status = copy / "server" / "offload" / "services" / "status.py"
    status.write_text(status.read_text() + "\nimport mcp.server  # deliberate violation\n")
    broken = _lint_imports(copy, copy / "server")
    assert broken.returncode != 0
    assert "Services never import mcp BROKEN" in broken.stdout
    assert "offload.services.status -> mcp (l." in broken.stdout
