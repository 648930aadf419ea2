"""A non-editable install (what `pipx install .` and `uv tool install .` do: build a wheel, install
it) carries the shipped policies, price table and migrations, and finds them at run time."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_ships_policies_and_migrations_and_an_installed_copy_uses_them(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("offload_mcp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "policies").glob("*.yaml")}
    assert {f"offload/_shipped/{n}" for n in shipped} <= names
    migrations = {p.name for p in (ROOT / "server" / "offload" / "infra" / "ledger" / "schema").glob("*.sql")}
    assert {f"offload/infra/ledger/schema/{n}" for n in migrations} <= names

    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    home = tmp_path / "home"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(target),  # the installed copy, not this checkout
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "init"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    policy = home / ".config" / "offload" / "policy.yaml"
    assert policy.read_text() == (target / "offload" / "_shipped" / "default.yaml").read_text()
    serve = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "doctor"], capture_output=True, text=True, timeout=60, env=env
    )
    line = next(ln for ln in serve.stdout.splitlines() if ln.split()[1] == "policy")
    assert line.startswith(f"ok   policy   {target / 'offload' / '_shipped' / 'default.yaml'}"), line
