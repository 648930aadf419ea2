"""`offload statusline`: one short line on every prompt redraw; it never fails the prompt.

Imports only the standard library and offload's light modules (no anyio, rich, pydantic,
mcp or anthropic): it must start and finish in a few tens of milliseconds.

Claude Code pipes a JSON object to a statusline command (session_id, cost.total_cost_usd, ...;
the field set grows between versions, so every field is optional). With it, the line shows this
session's offload spend beside the host's own cost. `--also CMD` runs the user's previous
statusline command on the same input and puts its first line first.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from datetime import datetime
from typing import Any

from offload.config.settings import Settings
from offload.infra.ledger import windows as w
from offload.infra.ledger.statusline import read_statusline

STDIN_WAIT_S = 0.5  # Claude Code writes its JSON at once; a terminal or an idle pipe gets no wait beyond this
STDIN_MAX_BYTES = 1_000_000
ALSO_TIMEOUT_S = 5.0
SEPARATOR = " │ "


def read_host_input(stream: Any = None) -> bytes:
    """Whatever the host piped in, or b"" (a terminal, nothing within STDIN_WAIT_S, any error)."""
    stream = sys.stdin if stream is None else stream
    try:
        if stream is None or stream.isatty():
            return b""
    except (OSError, ValueError):
        return b""
    got: list[bytes] = []

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            got.append(stream.buffer.read(STDIN_MAX_BYTES))

    # A thread, not select(): select does not work on pipes on Windows.
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(STDIN_WAIT_S)
    return got[0] if got else b""


def parse_host_input(raw: bytes) -> tuple[str | None, str | None]:
    """(session_id, host cost text) from Claude Code's statusline JSON; (None, None) if absent or odd."""
    try:
        doc = json.loads(raw) if raw.strip() else None
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    session = doc.get("session_id")
    cost = doc.get("cost")
    total = cost.get("total_cost_usd") if isinstance(cost, dict) else None
    host = None
    if isinstance(total, int | float) and not isinstance(total, bool) and total >= 0:
        # The host's own estimate, shown as it reports it; offload's money stays exact in the ledger.
        host = f"${total:,.2f}"
    return (session if isinstance(session, str) and session else None), host


def run_also(command: str, raw: bytes) -> str:
    """First line of the user's own statusline command fed the same input; "" if it fails."""
    try:
        done = subprocess.run(command, shell=True, input=raw, capture_output=True, timeout=ALSO_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    return lines[0].rstrip() if lines else ""


def cmd_statusline(settings: Settings, *, also: str | None = None, now: datetime | None = None) -> int:
    raw = read_host_input()
    session, host = parse_host_input(raw)
    line = read_statusline(settings.ledger_target, now or w.utcnow(), session_id=session)
    if host is not None:
        line += f" · host {host}"
    if also:
        theirs = run_also(also, raw)
        if theirs:
            line = theirs + SEPARATOR + line
    print(line)
    sys.stdout.flush()
    return 0
