"""`offload emulator` command line (wired into offload/cli.py by the integrator)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from .config import EmulatorConfig
from .faults import FaultSpec, FaultSpecError
from .replies import Script, ScriptError
from .server import bind, serve_forever


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="offload emulator", description="Local Claude API emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--script", metavar="FILE", help="YAML reply script")
    p.add_argument("--faults", metavar="SPEC", help="e.g. 429=0.1,529=0.05,500=0.05,drop=0.02,latency=20-80ms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-delay", type=float, default=1.0, metavar="SECONDS")
    p.add_argument(
        "--batch-cache-hit-rate",
        type=float,
        default=EmulatorConfig.batch_cache_hit_rate,
        metavar="RATE",
        help="share of batch requests whose cache lookup hits (0-1; docs: typically 0.30-0.98)",
    )
    p.add_argument(
        "--stream-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pause between two SSE events of a streamed reply (to watch or interrupt a stream)",
    )
    p.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Fail fast on a bad script or fault spec, before binding the port.
    try:
        Script.load(args.script)
        FaultSpec.parse(args.faults)
    except (ScriptError, FaultSpecError) as exc:
        print(f"offload emulator: {exc}", file=sys.stderr)
        return 2
    try:
        config = EmulatorConfig(
            host=args.host,
            port=args.port,
            seed=args.seed,
            script=args.script,
            faults=args.faults,
            batch_delay_s=args.batch_delay,
            batch_cache_hit_rate=args.batch_cache_hit_rate,
            stream_delay_s=args.stream_delay,
            api_key=args.api_key,
            access_log=args.verbose,
        )
    except ValueError as exc:
        print(f"offload emulator: {exc}", file=sys.stderr)
        return 2
    # Bind before the banner: a busy port is one line and exit 2, never a banner then a failure.
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"offload emulator: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    print(f"offload emulator: http://{args.host}:{port} (seed {args.seed})", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        serve_forever(config, sock)
    return 0
