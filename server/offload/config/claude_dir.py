"""Where Claude Code keeps its session transcripts (the host's own bill is read from them).

`OFFLOAD_CLAUDE_DIR` wins, then Claude Code's own `CLAUDE_CONFIG_DIR` (a comma-separated list;
the first entry is used), then `~/.claude`. Transcripts are the `*.jsonl` files under its
`projects/` folder (one folder per working directory, subagent files nested below).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def transcripts_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    chosen = env.get("OFFLOAD_CLAUDE_DIR") or (env.get("CLAUDE_CONFIG_DIR") or "").split(",")[0].strip()
    base = Path(chosen).expanduser() if chosen else Path(env.get("HOME") or Path.home()) / ".claude"
    return base / "projects"
