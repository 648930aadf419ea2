"""Claude Code session transcripts written the way Claude Code writes them (one JSON object a line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VERSION = "2.1.197"


def assistant(
    session: str,
    msg_id: str,
    request_id: str | None,
    model: str,
    usage: dict[str, Any],
    *,
    block: dict[str, Any] | None = None,
    ts: str = "2026-11-29T08:00:00.000Z",
    cwd: str = "/home/me/proj",
    sidechain: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """One assistant line: Claude Code writes one per content block, each repeating the usage."""
    line: dict[str, Any] = {
        "parentUuid": "9a0e5d0c-0000-4000-8000-000000000001",
        "isSidechain": sidechain,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session,
        "version": VERSION,
        "gitBranch": "main",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block or {"type": "text", "text": "done"}],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"service_tier": "standard", **usage},
        },
        "type": "assistant",
        "uuid": f"u-{msg_id}-{len(json.dumps(usage))}",
        "timestamp": ts,
        **extra,
    }
    if request_id is not None:
        line["requestId"] = request_id
    return line


def user(session: str, text: str, *, cwd: str = "/home/me/proj") -> dict[str, Any]:
    return {
        "parentUuid": None,
        "isSidechain": False,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session,
        "version": VERSION,
        "type": "user",
        "message": {"role": "user", "content": text},
        "uuid": "u-user",
        "timestamp": "2026-11-29T07:59:59.000Z",
    }


def write_transcript(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    """Objects become compact JSON lines (as Claude Code writes them); strings are written raw."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ln in lines:
            fh.write((ln if isinstance(ln, str) else json.dumps(ln, separators=(",", ":"))) + "\n")
    return path
