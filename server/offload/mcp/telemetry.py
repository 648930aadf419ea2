"""The server lifespan's switch for OTLP export: off unless `OFFLOAD_OTEL=1`.

`offload.mcp.otel` is imported only when switched on: it needs the optional `otel` extra, and
a server without it must start (and `offload statusline` must stay light) all the same.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from offload.config.otel import otel_enabled
from offload.core.errors import ConfigError
from offload.state import AppState


@asynccontextmanager
async def otel_export(state: AppState) -> AsyncIterator[None]:
    if not otel_enabled():
        yield
        return
    try:
        otel = importlib.import_module("offload.mcp.otel")
    except ImportError as exc:
        raise ConfigError(
            f"OFFLOAD_OTEL is set but OpenTelemetry is not installed ({exc.name}); "
            "pip install 'offload-mcp[otel]', or unset OFFLOAD_OTEL"
        ) from None
    provider = otel.start(state.settings.db_path, state.prices)
    try:
        yield
    finally:
        # shutdown() exports one last time: a short-lived stdio session still reports its spend.
        await anyio.to_thread.run_sync(provider.shutdown)
