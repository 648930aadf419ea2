"""`offload` command line. Parsing lives here; each command's work lives in its own module.

Imports are lazy: `offload statusline` runs on every Claude Code prompt redraw and must not
pay for `mcp` or `anthropic` start-up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from offload import __version__

if TYPE_CHECKING:
    from offload.config.settings import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="offload", description="Cheap Claude sub-work for agents, priced exactly.")
    p.add_argument("--version", action="version", version=f"offload {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    s.add_argument("--policy", help="policy YAML (default: $OFFLOAD_POLICY or the shipped default)")
    s.add_argument(
        "--db",
        help="ledger SQLite file or postgresql:// URL (default: $OFFLOAD_DB or ~/.local/share/offload/offload.db)",
    )
    s.add_argument(
        "--http", metavar="[HOST:]PORT", help="serve streamable HTTP instead of stdio (a bare PORT means 127.0.0.1)"
    )
    s.add_argument(
        "--session", help="budget session id (default: $OFFLOAD_SESSION, $CLAUDE_CODE_SESSION_ID or one per process)"
    )

    e = sub.add_parser("emulator", help="run the local Claude API emulator", add_help=False)
    e.add_argument("rest", nargs=argparse.REMAINDER)

    sp = sub.add_parser("spend", help="spend and savings report from the ledger")
    sp.add_argument("--by", choices=["day", "model", "tool", "session", "project", "user"], default="day")
    sp.add_argument("--since", help="ISO date (YYYY-MM-DD) or a span like 7d, 24h (default: 30d)")
    fmt = sp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output")
    fmt.add_argument("--csv", action="store_true", help="one CSV row per group, for spreadsheets")
    sp.add_argument("--db", help="ledger SQLite file")

    sl = sub.add_parser("statusline", help="one short line for Claude Code's statusline")
    sl.add_argument("--db", help="ledger SQLite file")
    sl.add_argument("--also", metavar="CMD", help="another statusline command to show first (same stdin)")

    po = sub.add_parser("policy", help="check or explain routing policies")
    posub = po.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    pc = posub.add_parser("check", help="validate policy files (exit 1 on the first bad one)")
    pc.add_argument("files", nargs="+")
    px = posub.add_parser("explain", help="show the routing decision for a prompt")
    px.add_argument("file")
    px.add_argument("prompt")
    px.add_argument("--task")
    px.add_argument("--difficulty", choices=["easy", "medium", "hard"])
    px.add_argument("--db", help="ledger SQLite file whose learned start tiers to show")
    pr = posub.add_parser("reset-learning", help="forget what learning saw (all families, or one)")
    pr.add_argument("--family", help="one family, as `policy explain` names it (e.g. code, code@hard)")
    pr.add_argument("--db", help="ledger SQLite file")

    b = sub.add_parser("batches", help="list batches recorded in the ledger")
    b.add_argument("--db", help="ledger SQLite file")
    b.add_argument("--all", action="store_true", help="include finished batches")
    b.add_argument("--json", action="store_true")

    it = sub.add_parser("init", help="set offload up for Claude Code: policy, registration, skill, statusline")
    it.add_argument("--scope", choices=["user", "project"], default="user", help="all projects, or this one")
    it.add_argument("--statusline", action="store_true", help="show offload's spend in Claude Code's statusline")

    dr = sub.add_parser("doctor", help="check key, API, policy, ledger, roots and host registration")
    dr.add_argument("--policy", help="policy YAML (default: $OFFLOAD_POLICY or the shipped default)")
    dr.add_argument("--db", help="ledger SQLite file")
    db_ = sub.add_parser("dashboard", help="local web page: spend charts, budgets, batches, the host's own bill")
    db_.add_argument("--port", type=int, default=8766, help="TCP port (0: any free port; default 8766)")
    db_.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need a token)")
    db_.add_argument("--db", help="ledger SQLite file")
    db_.add_argument("--transcripts", help="Claude Code transcripts directory (default: ~/.claude/projects)")

    lg = sub.add_parser("ledger", help="ledger maintenance")
    lgsub = lg.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    lm = lgsub.add_parser("migrate", help="copy a SQLite ledger's whole history into another (re-running is harmless)")
    lm.add_argument("source", metavar="SQLITE_FILE")
    lm.add_argument("target", metavar="POSTGRES_URL", help="postgresql://... (or another ledger file)")

    d = sub.add_parser("demo", help="end-to-end rehearsal on the emulator and a temporary database")
    d.add_argument("--keep", action="store_true", help="keep the temporary database and print its path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        # The emulator owns its flags; argparse.REMAINDER would stop at the first option.
        from offload_emulator.cli import main as emulator_main

        return emulator_main(argv[1:])
    args = _parser().parse_args(argv)
    cmd = args.command
    from offload.core.errors import OffloadError

    try:
        return _dispatch(args)
    except OffloadError as exc:
        print(f"offload {cmd}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace) -> Settings:
    import os

    from offload.config.settings import Settings, ledger_location

    policy, db = getattr(args, "policy", None), getattr(args, "db", None)
    db_path, db_url = ledger_location(db, os.environ) if db else (None, None)
    return Settings.from_env(
        policy_path=Path(policy) if policy else None,
        db_path=db_path,
        db_url=db_url,
        session_id=getattr(args, "session", None),
    )


def _serve(args: argparse.Namespace) -> int:
    from offload.cli.serve import preflight, refuse
    from offload.core.errors import OffloadError

    try:
        settings = _settings(args)
        preflight(settings)
    except OffloadError as exc:
        return refuse(exc)
    if args.http:
        from offload.mcp.http import serve_http

        return serve_http(settings, args.http)
    from offload.mcp.server import serve_stdio

    return serve_stdio(settings)


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "serve":
        return _serve(args)
    if cmd == "spend":
        from offload.cli.spend import cmd_spend

        return cmd_spend(_settings(args), by=args.by, since=args.since, as_json=args.json, as_csv=args.csv)
    if cmd == "statusline":
        from offload.cli.statusline import cmd_statusline

        return cmd_statusline(_settings(args), also=args.also)
    if cmd == "policy":
        from offload.cli import policy as policy_cli

        if args.policy_command == "check":
            return policy_cli.cmd_check(args.files)
        if args.policy_command == "reset-learning":
            return policy_cli.cmd_reset_learning(_settings(args).ledger_target, args.family)
        return policy_cli.cmd_explain(
            args.file, args.prompt, task=args.task, difficulty=args.difficulty, db=_settings(args).ledger_target
        )
    if cmd == "batches":
        from offload.cli.batches import cmd_list

        return cmd_list(_settings(args), include_done=args.all, as_json=args.json)
    if cmd == "init":
        from offload.cli.init import cmd_init

        return cmd_init(args.scope, statusline=args.statusline)
    if cmd == "doctor":
        from offload.cli.doctor import cmd_doctor

        return cmd_doctor(_settings(args))
    if cmd == "dashboard":
        from offload.cli.dashboard import cmd_dashboard

        transcripts = Path(args.transcripts).expanduser() if args.transcripts else None
        return cmd_dashboard(_settings(args), host=args.host, port=args.port, transcripts=transcripts)
    if cmd == "ledger":
        from offload.cli.ledger import cmd_migrate

        return cmd_migrate(args.source, args.target)
    if cmd == "demo":
        from offload.cli.demo import run_demo

        return run_demo(keep=args.keep)
    raise AssertionError(f"unhandled command {cmd}")  # pragma: no cover - argparse restricts choices


if __name__ == "__main__":
    sys.exit(main())
