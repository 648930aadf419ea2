"""`offload init`: a policy the user owns, the Claude Code registration, the skill, and (asked
for) the statusline. Running it again changes nothing: every step compares before it writes.

Paths are absolute everywhere: a host starts the server from a directory of its choosing, with
a PATH that may not hold `offload`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offload.cli.guidance import SKILL_MD, SKILL_NAME
from offload.cli.hosts import claude_code_user_config, claude_dir, read_json, servers
from offload.config.settings import shipped, user_config_dir, user_data_dir
from offload.core.errors import InputError

SERVER_NAME = "offload"
CLAUDE_TIMEOUT_S = 60

Say = Callable[[str], None]


def offload_command() -> list[str]:
    """How to start this very offload: its console script by absolute path, else `python -m`."""
    script = Path(sys.argv[0])
    if script.name in ("offload", "offload.exe") and script.is_file():
        return [os.path.abspath(script)]
    found = shutil.which("offload")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "offload.cli.main"]


@dataclass(frozen=True)
class Plan:
    scope: str  # user | project
    project_dir: Path
    policy: Path
    db: Path
    command: list[str]

    @property
    def env(self) -> dict[str, str]:
        return {"OFFLOAD_POLICY": str(self.policy), "OFFLOAD_DB": str(self.db)}

    @property
    def args(self) -> list[str]:
        return [*self.command[1:], "serve"]

    def add_command(self) -> list[str]:
        # NAME before -e: -e takes several values and would swallow a name that followed it.
        envs = [x for k, v in self.env.items() for x in ("-e", f"{k}={v}")]
        return ["claude", "mcp", "add", "-s", self.scope, SERVER_NAME, *envs, "--", self.command[0], *self.args]

    @property
    def claude_home(self) -> Path:
        return claude_dir() if self.scope == "user" else self.project_dir / ".claude"

    @property
    def registration_file(self) -> Path:
        return claude_code_user_config() if self.scope == "user" else self.project_dir / ".mcp.json"

    @property
    def settings_file(self) -> Path:
        # Project scope: the personal, uncommitted settings; a statusline is one person's choice.
        return self.claude_home / ("settings.json" if self.scope == "user" else "settings.local.json")


def make_plan(scope: str, env: Mapping[str, str] | None = None) -> Plan:
    env = os.environ if env is None else env
    return Plan(
        scope=scope,
        project_dir=Path.cwd().resolve(),
        policy=user_config_dir(env) / "policy.yaml",
        db=user_data_dir(env) / "offload.db",
        command=offload_command(),
    )


def _write_if_absent(path: Path, text: str, say: Say, what: str) -> None:
    if path.exists():
        same = path.read_text(encoding="utf-8") == text
        say(f"unchanged {what}: {path}" if same else f"kept      {what}: {path} (yours; not overwritten)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    say(f"created   {what}: {path}")


def ensure_policy(plan: Plan, say: Say) -> None:
    text = shipped("default.yaml").read_text(encoding="utf-8")
    _write_if_absent(plan.policy, text, say, "policy")
    plan.db.parent.mkdir(parents=True, exist_ok=True)


def ensure_skill(plan: Plan, say: Say) -> None:
    _write_if_absent(plan.claude_home / "skills" / SKILL_NAME / "SKILL.md", SKILL_MD, say, "skill")


def _existing(plan: Plan) -> Mapping[str, Any] | None:
    return dict(servers(read_json(plan.registration_file))).get(SERVER_NAME)


def _matches(entry: Mapping[str, Any], plan: Plan) -> bool:
    return (
        entry.get("command") == plan.command[0]
        and list(entry.get("args") or []) == plan.args
        and dict(entry.get("env") or {}) == plan.env
    )


def ensure_registration(plan: Plan, say: Say) -> None:
    shown = shlex.join(plan.add_command())
    entry = _existing(plan)
    if entry is not None:
        if _matches(entry, plan):
            say(f"unchanged Claude Code registration ({plan.scope} scope): {plan.registration_file}")
        else:
            say(
                f"kept      the existing '{SERVER_NAME}' in {plan.registration_file}, which differs; to replace it: "
                f"claude mcp remove -s {plan.scope} {SERVER_NAME} && {shown}"
            )
        return
    claude = shutil.which("claude")
    if claude is None:
        say("Claude Code's `claude` command is not on PATH; register offload with:")
        say(f"  {shown}")
        return
    done = subprocess.run(
        [claude, *plan.add_command()[1:]],
        cwd=plan.project_dir,
        capture_output=True,
        text=True,
        timeout=CLAUDE_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise InputError(f"`{shown}` failed: {reason[-1] if reason else f'exit {done.returncode}'}")
    say(f"registered with Claude Code ({plan.scope} scope): {shown}")


def statusline_command(plan: Plan) -> str:
    return shlex.join([*plan.command, "statusline", "--db", str(plan.db)])


def _users_own(existing: str) -> tuple[str, bool]:
    """(the user's own statusline command within `existing`, whether `existing` is an offload one).

    An offload statusline from another install (its path changed) is replaced, keeping what it
    composed with; composing with it would show offload twice and nest on every re-init.
    """
    try:
        argv = shlex.split(existing)
    except ValueError:
        return existing, False
    ours = bool(argv) and (Path(argv[0]).name in ("offload", "offload.exe") or "offload.cli.main" in argv)
    if not ours or "statusline" not in argv:
        return existing, False
    at = argv.index("--also") + 1 if "--also" in argv else len(argv)
    return (argv[at] if at < len(argv) else ""), True


def ensure_statusline(plan: Plan, say: Say) -> None:
    path = plan.settings_file
    doc = read_json(path) if path.exists() else {}
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a JSON object; fix it, then run `offload init --statusline` again")
    ours = statusline_command(plan)
    current = doc.get("statusLine")
    existing = current.get("command") if isinstance(current, dict) else None
    if isinstance(existing, str) and existing.startswith(ours):
        say(f"unchanged statusline: {path}")
        return
    # Compose: the user's own statusline keeps running, fed the same stdin, and comes first.
    theirs, replacing = _users_own(existing) if isinstance(existing, str) and existing else ("", False)
    command = ours if not theirs else f"{ours} --also {shlex.quote(theirs)}"
    new = dict(current) if isinstance(current, dict) else {}
    new.update({"type": "command", "command": command})
    doc["statusLine"] = new
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    say(f"{'replaced' if replacing else 'composed' if theirs else 'installed'} statusline: {path}")


def cmd_init(scope: str, *, statusline: bool, say: Say = print) -> int:
    plan = make_plan(scope)
    ensure_policy(plan, say)
    ensure_registration(plan, say)
    ensure_skill(plan, say)
    if statusline:
        ensure_statusline(plan, say)
    else:
        say(f"statusline: add offload's spend beside Claude Code's with `offload init --scope {scope} --statusline`")
    say(f"ledger: {plan.db}; check everything with `offload doctor`")
    if not os.environ.get("ANTHROPIC_API_KEY"):
        say("note: the server reads ANTHROPIC_API_KEY from the environment Claude Code starts it in")
    return 0
