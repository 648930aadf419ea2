"""`offload serve` refuses a bad start-up in one line, before stdio or HTTP is up: real subprocesses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

OFFLOAD = shutil.which("offload") or str(Path(sys.executable).with_name("offload"))

TYPO_POLICY = """\
name: mine
tiers: {cheap: claude-haiku-5-5, standard: claude-sonnet-5-5}
rules:
  - {when: {task: [classify]}, tier: cheap}
default_tier: cheep
baseline: claude-opus-5-5
"""


def _missing(tmp: Path) -> tuple[list[str], str]:
    return ["--policy", str(tmp / "missing.yaml"), "--db", str(tmp / "l.db")], "missing.yaml: file not found"


def _typo(tmp: Path) -> tuple[list[str], str]:
    (tmp / "typo.yaml").write_text(TYPO_POLICY)
    return [
        "--policy",
        str(tmp / "typo.yaml"),
        "--db",
        str(tmp / "l.db"),
    ], "typo.yaml: default_tier: unknown tier 'cheep'"


def _unwritable(tmp: Path) -> tuple[list[str], str]:
    (tmp / "afile").write_text("a file where a directory should be")
    db = tmp / "afile" / "ledger.db"
    return ["--db", str(db)], f"ledger {db}: cannot open or write it ({tmp / 'afile'} is not a directory)"


def _not_a_db(tmp: Path) -> tuple[list[str], str]:
    (tmp / "notes.db").write_text("not sqlite at all\n" * 100)
    return ["--db", str(tmp / "notes.db")], "notes.db: cannot open or write it (file is not a database)"


def _a_directory(tmp: Path) -> tuple[list[str], str]:
    # sqlite cannot open it; aiosqlite's worker thread used to add a traceback after the line.
    (tmp / "ledger.db").mkdir()
    return ["--db", str(tmp / "ledger.db")], "ledger.db: cannot open or write it (unable to open database file)"


CASES = [_missing, _typo, _unwritable, _not_a_db, _a_directory]


@pytest.mark.parametrize("transport", [[], ["--http", "127.0.0.1:0"]], ids=["stdio", "http"])
@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_startup_is_one_line_naming_the_file_and_exit_2(
    tmp_path: Path, transport: list[str], case: Callable[[Path], tuple[list[str], str]]
) -> None:
    flags, expected = case(tmp_path)
    env = {"PATH": str(Path(OFFLOAD).parent), "HOME": str(tmp_path)}
    done = subprocess.run(
        [OFFLOAD, "serve", *flags, *transport],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # nothing on the protocol channel
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("offload serve: ")
    assert expected in lines[0]
    assert "set OFFLOAD_" in lines[0] or "policy" in lines[0]  # says what to change


def test_many_policy_problems_still_fold_onto_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: x\ntiers: {cheap: 3}\ndefault_tier: [1]\nbaseline: 5\n")
    env = {"PATH": str(Path(OFFLOAD).parent), "HOME": str(tmp_path)}
    done = subprocess.run(
        [OFFLOAD, "serve", "--policy", str(tmp_path / "bad.yaml"), "--db", str(tmp_path / "l.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "has 3 problems: tiers.cheap: expected text, got 3; default_tier:" in line
