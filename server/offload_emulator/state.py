"""Everything the emulator remembers: clock, cache, script, faults, batches, request log.

Tests reach it as ``emu.state`` to advance time, swap scripts or faults and inspect what
the server received.
"""

from __future__ import annotations

import random
import string
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import prewarm
from .batches import BatchStore
from .caching import PromptCache
from .clock import Clock
from .config import EmulatorConfig
from .errors import ApiError
from .faults import Faults, FaultSpec
from .prompt import parse_create
from .ratelimits import RateWindow
from .replies import Script, make_reply

_ALPHABET = string.ascii_letters + string.digits


@dataclass
class RequestRecord:
    request_id: str
    method: str
    path: str
    at: float  # emulator clock
    retry_count: int  # the SDK's x-stainless-retry-count (0 = first attempt)
    status: int | None = None
    fault: str | None = None  # the injected fault, if any
    body: Any = None  # parsed JSON body, kept for inspection
    model: str | None = None
    usage: dict[str, Any] | None = None
    seq: int = 0  # arrival number, from 1 (caching.py: what a concurrent request can read)
    # W3C trace context headers as sent (traceparent, tracestate): whether a caller's trace reaches the API.
    trace: dict[str, str] = field(default_factory=dict)


@dataclass
class EmulatorState:
    config: EmulatorConfig = field(default_factory=EmulatorConfig)

    def __post_init__(self) -> None:
        self.clock = self.config.clock or Clock()
        self.cache = PromptCache(self.clock)
        self.rate_window = RateWindow(self.clock)
        self.script = Script.load(self.config.script)
        self.faults = Faults(FaultSpec.parse(self.config.faults), seed=self.config.seed)
        self.requests: list[RequestRecord] = []
        self._ids = random.Random(f"ids:{self.config.seed}")
        self._lock = threading.Lock()
        self.batches = BatchStore(self)

    # -- programmatic API for tests -------------------------------------------------
    def set_faults(self, spec: FaultSpec | str | None) -> None:
        self.faults.set(spec)

    def set_script(self, source: str | Path | list[Any] | dict[str, Any] | None) -> None:
        self.script = Script.load(source)

    def calls(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [
                r for r in self.requests if (path is None or r.path == path) and (method is None or r.method == method)
            ]

    # -- internals --------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        # Seeded so identical runs produce identical ids (repeatable logs and results).
        with self._lock:
            return prefix + "".join(self._ids.choice(_ALPHABET) for _ in range(24))

    def log(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)
            record.seq = len(self.requests)

    @property
    def arrivals(self) -> int:
        with self._lock:
            return len(self.requests)

    def run_message(
        self,
        body: object,
        *,
        service_tier: str = "standard",
        at: float | None = None,
        arrived: int | None = None,
        lucky: bool = True,
    ) -> dict[str, Any]:
        """One Messages call: validate, apply script, cache and usage. Raises ApiError.

        ``at`` is when a batch request ran (its cache view is of that moment). A synchronous
        call first lets every batch that has ended by now run, so it sees their cache writes.
        ``arrived`` (the request's arrival number) and ``lucky`` (a batch request's best-effort
        draw) decide which cache entries it can read (caching.py).
        """
        if at is None:
            self.batches.advance_all()
        prompt = parse_create(body)
        in_batch = service_tier == "batch"
        if in_batch and prompt.body.get("stream"):
            raise ApiError.invalid("stream: not supported inside a Message Batches request")
        warm = prewarm.is_prewarm(prompt.body)
        if warm:
            prewarm.check(prompt.body, in_batch=in_batch)
        model = prompt.model.id
        rule = None if warm else self.script.pick(model, prompt.last_user_text)
        if rule is not None and rule.error is not None:
            err = rule.error
            raise ApiError(err.status, err.type, err.message)
        # A live response begins as soon as this returns: what it writes is for later arrivals.
        # A batch request ran at `at`, in the past; its writes are ordered by that time alone.
        horizon = self.arrivals if at is None else -1
        outcome = self.cache.apply(prompt, at=at, arrived=arrived, horizon=horizon, lucky=lucky)
        stops = list(prompt.body.get("stop_sequences") or [])
        reply = None if warm else make_reply(rule, model, prompt.last_user_text, int(prompt.body["max_tokens"]), stops)
        usage: dict[str, Any] = {
            "input_tokens": outcome.input_tokens,
            "cache_creation_input_tokens": outcome.creation,
            "cache_read_input_tokens": outcome.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": outcome.write_5m,
                "ephemeral_1h_input_tokens": outcome.write_1h,
            },
            "output_tokens": 0 if reply is None else reply.output_tokens,
            "service_tier": service_tier,
        }
        return {
            "id": self.new_id("msg_"),
            "type": "message",
            "role": "assistant",
            # The id as asked for: a dated snapshot id comes back dated.
            "model": prompt.body["model"],
            "content": [] if reply is None else reply.content(),
            "stop_reason": "max_tokens" if reply is None else reply.stop_reason,
            "stop_sequence": None if reply is None else reply.stop_sequence,
            "stop_details": None,
            "container": None,
            "usage": usage,
        }
