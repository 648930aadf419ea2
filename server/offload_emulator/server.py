"""Run the emulator under uvicorn: in a background thread (tests) or blocking (CLI)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from .app import create_app
from .config import EmulatorConfig
from .state import EmulatorState

log = logging.getLogger("offload_emulator")


@dataclass
class EmulatorHandle:
    url: str  # e.g. http://127.0.0.1:54321 (pass as base_url to the SDK)
    state: EmulatorState
    config: EmulatorConfig


def _uvicorn_config(state: EmulatorState) -> uvicorn.Config:
    cfg = state.config
    return uvicorn.Config(
        create_app(state),
        host=cfg.host,
        port=cfg.port,
        # h11 + asyncio: the drop fault relies on h11_impl's cycle/transport layout.
        loop="asyncio",
        http="h11",
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        access_log=cfg.access_log,
        log_config=None,
        timeout_graceful_shutdown=2,
    )


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket says it is TCP. Without it, h11 writing a response's headers and
    # body separately meets Nagle's algorithm and the client's delayed ACK: every request on a
    # kept-alive connection waited ~40 ms for its body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def serve_in_thread(config: EmulatorConfig | None = None) -> Iterator[EmulatorHandle]:
    """Serve on a background thread; the port is bound before this yields."""
    config = config or EmulatorConfig()
    state = EmulatorState(config)
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(_uvicorn_config(state))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="offload-emulator", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the emulator server failed to start (see the log on stderr)")
            thread.join(0.01)
        shown = f"[{host}]" if ":" in host else host
        yield EmulatorHandle(url=f"http://{shown}:{port}", state=state, config=config)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def serve_forever(config: EmulatorConfig, sock: socket.socket) -> None:
    """Blocking serve (the CLI) on a socket the caller bound; Ctrl-C stops it."""
    state = EmulatorState(config)
    server = uvicorn.Server(_uvicorn_config(state))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
