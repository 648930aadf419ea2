"""Where hosts keep their MCP server registrations, and finding offload's among them.

Claude Code: `~/.claude.json` (user scope: top-level `mcpServers`; local scope:
`projects[<dir>].mcpServers`) and `.mcp.json` in a project root (project scope). Claude Desktop:
`claude_desktop_config.json` in its config directory (macOS `~/Library/Application Support/Claude`,
Windows `%APPDATA%\\Claude`, Linux `~/.config/Claude`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs


@dataclass(frozen=True)
class Registration:
    where: str  # "~/.claude.json (user scope)" and the like
    name: str
    command: str
    args: tuple[str, ...]
    env: Mapping[str, str]

    @property
    def shown(self) -> str:
        return " ".join((self.command, *self.args))

    def command_found(self) -> bool:
        cmd = os.path.expanduser(self.command)
        if os.sep in cmd or (os.altsep and os.altsep in cmd):
            return os.path.isfile(cmd) and os.access(cmd, os.X_OK)
        return shutil.which(cmd) is not None


def claude_dir() -> Path:
    """Claude Code's own directory (skills, settings.json): `$CLAUDE_CONFIG_DIR` or `~/.claude`."""
    custom = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(custom).expanduser() if custom else Path.home() / ".claude"


def claude_code_user_config() -> Path:
    """`~/.claude.json`, or `.claude.json` inside `$CLAUDE_CONFIG_DIR` when that is set."""
    custom = os.environ.get("CLAUDE_CONFIG_DIR")
    return (Path(custom).expanduser() if custom else Path.home()) / ".claude.json"


def claude_desktop_config() -> Path:
    # roaming=True: Claude Desktop keeps its config under %APPDATA% (Roaming) on Windows.
    return Path(platformdirs.user_config_dir("Claude", appauthor=False, roaming=True)) / "claude_desktop_config.json"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def servers(doc: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    servers = doc.get("mcpServers") if isinstance(doc, Mapping) else None
    if isinstance(servers, Mapping):
        for name, entry in servers.items():
            if isinstance(entry, Mapping):
                yield str(name), entry


def _is_offload(name: str, entry: Mapping[str, Any]) -> bool:
    command = str(entry.get("command") or "")
    args = [str(a) for a in entry.get("args") or []]
    return name == "offload" or Path(command).name in ("offload", "offload.exe") or "offload.cli.main" in args


def _registration(where: str, name: str, entry: Mapping[str, Any]) -> Registration:
    env = entry.get("env")
    return Registration(
        where=where,
        name=name,
        command=str(entry.get("command") or entry.get("url") or ""),
        args=tuple(str(a) for a in entry.get("args") or []),
        env={str(k): str(v) for k, v in env.items()} if isinstance(env, Mapping) else {},
    )


def find_registrations(project_dir: Path | None = None) -> list[Registration]:
    """Every offload registration Claude Code (user, local, project scope) or Claude Desktop would load."""
    found: list[Registration] = []
    user_cfg = claude_code_user_config()
    doc = read_json(user_cfg)
    found += [_registration(f"{user_cfg} (user scope)", n, e) for n, e in servers(doc) if _is_offload(n, e)]
    projects = doc.get("projects") if isinstance(doc, Mapping) else None
    project = (project_dir or Path.cwd()).resolve()
    if isinstance(projects, Mapping):
        for key in (str(project), project.as_posix()):
            entries = [(n, e) for n, e in servers(projects.get(key)) if _is_offload(n, e)]
            found += [_registration(f"{user_cfg} (local scope, {key})", n, e) for n, e in entries]
            if entries:
                break
    for base in (project, *project.parents):
        mcp_json = base / ".mcp.json"
        if mcp_json.is_file():
            found += [
                _registration(f"{mcp_json} (project scope)", n, e)
                for n, e in servers(read_json(mcp_json))
                if _is_offload(n, e)
            ]
            break
    desktop = claude_desktop_config()
    found += [
        _registration(f"{desktop} (Claude Desktop)", n, e) for n, e in servers(read_json(desktop)) if _is_offload(n, e)
    ]
    return found
