"""Emulator configuration (one frozen object for the server, the CLI and tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clock import Clock

MIB = 1024 * 1024


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    seed: int = 0
    # A YAML file path or already-parsed rules (see replies.py for the format).
    script: str | Path | list[Any] | dict[str, Any] | None = None
    faults: str | None = None  # see faults.py for the grammar
    batch_delay_s: float = 1.0  # emulated time from batch creation to the end of processing
    cancel_delay_s: float = 0.0  # emulated time a cancel spends in "canceling"
    # Share of batch requests whose cache lookup is honoured (the rest miss and write again).
    # The docs: "best-effort ... typically 30% to 98%"; the default is that range's midpoint,
    # neither the best nor the worst case. 1.0 gives the deterministic best case.
    batch_cache_hit_rate: float = 0.64
    api_key: str | None = None  # when set, only this key is accepted (others get 401)
    max_message_body: int = 32 * MIB
    max_batch_body: int = 256 * MIB
    # Hint sent as retry-after-ms on injected retryable faults so SDK retries stay fast in
    # tests; None sends only the API's own `retry-after` (whole seconds) on 429s.
    retry_after_ms: int | None = 20
    stream_delay_s: float = 0.0  # real time between two SSE events of a streamed reply
    clock: Clock | None = None
    access_log: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.batch_cache_hit_rate <= 1.0:
            raise ValueError(f"batch_cache_hit_rate must be within [0, 1], got {self.batch_cache_hit_rate}")
