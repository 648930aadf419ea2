"""Message Batches: lifecycle evaluated lazily on the emulator clock.

Requests finish evenly spread over ``batch_delay_s`` (request i of n at
created + delay*(i+1)/n). Whenever a batch is looked at (and before every synchronous
Messages call), the clock decides what has happened: a cancel at time t cancels the
requests not finished by t; requests not finished within 24 h expire. Each request runs
against the prompt cache as of its own finish time, so its usage never depends on how
late a client polls. Like the API, ``request_counts`` show every request as
``processing`` until the whole batch ends, and ``results_url`` is set only then.

Cache hits are best-effort, as the batch docs say: each request's lookup is honoured with
probability ``EmulatorConfig.batch_cache_hit_rate``, drawn from a generator seeded by the
emulator seed and the batch id, so a run is repeatable (caching.py has the details).

Simplifications: requests run in order (the API runs them in any order); results are never
archived (``archived_at`` stays null; the API keeps them 29 days); a cancel on an ended batch
returns it unchanged.
"""

from __future__ import annotations

import json
import random
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import ApiError

if TYPE_CHECKING:
    from .state import EmulatorState

EXPIRY_S = 24 * 3600
MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Batch:
    id: str
    created_at: float
    delay_s: float
    requests: list[tuple[str, Any]]
    seq: int
    cancel_at: float | None = None
    ended_at: float | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def expires_at(self) -> float:
        return self.created_at + EXPIRY_S

    def finish_time(self, i: int) -> float:
        return self.created_at + self.delay_s * (i + 1) / len(self.requests)

    def status(self) -> str:
        if self.ended_at is not None:
            return "ended"
        return "canceling" if self.cancel_at is not None else "in_progress"


class BatchStore:
    def __init__(self, state: EmulatorState) -> None:
        self._state = state
        self._batches: dict[str, Batch] = {}
        self._seq = 0
        self._lock = threading.RLock()

    # -- API operations (each returns the JSON the endpoint answers with) ---------------
    def create(self, body: object, base_url: str) -> dict[str, Any]:
        requests = _validate_create(body)
        with self._lock:
            self._seq += 1
            batch = Batch(
                id=self._state.new_id("msgbatch_"),
                created_at=self._state.clock.now(),
                delay_s=self._state.config.batch_delay_s,
                requests=requests,
                seq=self._seq,
            )
            self._batches[batch.id] = batch
            return self._view(batch, base_url)

    def retrieve(self, batch_id: str, base_url: str) -> dict[str, Any]:
        with self._lock:
            return self._view(self._advance(self._get(batch_id)), base_url)

    def list(self, base_url: str, limit: int, after_id: str | None, before_id: str | None) -> dict[str, Any]:
        with self._lock:
            ordered = sorted(self._batches.values(), key=lambda b: (b.created_at, b.seq), reverse=True)
            ids = [b.id for b in ordered]
            if after_id is not None:
                if after_id not in ids:
                    raise ApiError.invalid(f"after_id: unknown batch {after_id}")
                start = ids.index(after_id) + 1
                page = ordered[start : start + limit]
                has_more = start + limit < len(ordered)
            elif before_id is not None:
                if before_id not in ids:
                    raise ApiError.invalid(f"before_id: unknown batch {before_id}")
                end = ids.index(before_id)
                page = ordered[max(0, end - limit) : end]
                has_more = end - limit > 0
            else:
                page = ordered[:limit]
                has_more = len(ordered) > limit
            data = [self._view(self._advance(b), base_url) for b in page]
            return {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }

    def advance_all(self) -> None:
        """Let every batch whose processing has ended by now produce its results."""
        with self._lock:
            for batch in sorted(self._batches.values(), key=lambda b: (b.created_at, b.seq)):
                self._advance(batch)

    def cancel(self, batch_id: str, base_url: str) -> dict[str, Any]:
        with self._lock:
            batch = self._advance(self._get(batch_id))
            if batch.ended_at is None and batch.cancel_at is None:
                batch.cancel_at = self._state.clock.now()
            return self._view(batch, base_url)

    def delete(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._advance(self._get(batch_id))
            if batch.ended_at is None:
                raise ApiError.invalid(
                    f"Batch {batch_id} cannot be deleted while it is {batch.status()}; "
                    "cancel it and wait until processing_status is 'ended'"
                )
            del self._batches[batch_id]
            return {"id": batch_id, "type": "message_batch_deleted"}

    def results_jsonl(self, batch_id: str) -> bytes:
        with self._lock:
            batch = self._advance(self._get(batch_id))
            if batch.ended_at is None:
                raise ApiError.invalid(f"Batch {batch_id} has not ended yet; results are not available")
            lines = list(batch.results)
        # Results come back in no particular order on the API; a seeded shuffle keeps
        # callers honest about matching by custom_id while staying repeatable.
        random.Random(f"results:{self._state.config.seed}:{batch_id}").shuffle(lines)
        return b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    # -- lifecycle --------------------------------------------------------------------
    def _get(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, "not_found_error", f"message batch {batch_id} not found")
        return batch

    def _advance(self, batch: Batch) -> Batch:
        if batch.ended_at is not None:
            return batch
        now = self._state.clock.now()
        end = min(batch.created_at + batch.delay_s, batch.expires_at)
        if batch.cancel_at is not None:
            end = min(end, batch.cancel_at + self._state.config.cancel_delay_s)
        if now < end:
            return batch
        results = []
        luck = random.Random(f"batch-cache:{self._state.config.seed}:{batch.id}")
        rate = self._state.config.batch_cache_hit_rate
        for i, (custom_id, params) in enumerate(batch.requests):
            lucky = luck.random() < rate
            done_at = batch.finish_time(i)
            if batch.cancel_at is not None and batch.cancel_at < done_at and batch.cancel_at < batch.expires_at:
                result: dict[str, Any] = {"type": "canceled"}
            elif done_at > batch.expires_at:
                result = {"type": "expired"}
            else:
                result = self._run(params, done_at, lucky)
            results.append({"custom_id": custom_id, "result": result})
        batch.results = results
        batch.ended_at = end
        return batch

    def _run(self, params: Any, at: float, lucky: bool) -> dict[str, Any]:
        try:
            message = self._state.run_message(params, service_tier="batch", at=at, lucky=lucky)
        except ApiError as err:
            return {
                "type": "errored",
                "error": {"type": "error", "error": err.error_object(), "request_id": None},
            }
        return {"type": "succeeded", "message": message}

    def _view(self, batch: Batch, base_url: str) -> dict[str, Any]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.ended_at is None:
            counts["processing"] = len(batch.requests)
        else:
            for line in batch.results:
                counts[line["result"]["type"]] += 1
        ended = batch.ended_at is not None
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status(),
            "request_counts": counts,
            "created_at": rfc3339(batch.created_at),
            "expires_at": rfc3339(batch.expires_at),
            "ended_at": rfc3339(batch.ended_at),
            "cancel_initiated_at": rfc3339(batch.cancel_at),
            "archived_at": None,
            "results_url": f"{base_url.rstrip('/')}/v1/messages/batches/{batch.id}/results" if ended else None,
        }


def _validate_create(body: object) -> list[tuple[str, Any]]:
    if not isinstance(body, dict):
        raise ApiError.invalid("request body must be a JSON object")
    for name in body:
        if name != "requests":
            raise ApiError.invalid(f"{name}: Extra inputs are not permitted")
    requests = body.get("requests")
    if requests is None:
        raise ApiError.invalid("requests: Field required")
    if not isinstance(requests, list) or not requests:
        raise ApiError.invalid("requests: at least one request is required")
    if len(requests) > MAX_REQUESTS:
        raise ApiError.invalid(f"requests: at most {MAX_REQUESTS} requests per batch, got {len(requests)}")
    seen: set[str] = set()
    out: list[tuple[str, Any]] = []
    for i, req in enumerate(requests):
        if not isinstance(req, dict) or set(req) - {"custom_id", "params"}:
            raise ApiError.invalid(f"requests.{i}: expected an object with only 'custom_id' and 'params'")
        custom_id = req.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            raise ApiError.invalid(f"requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if custom_id in seen:
            raise ApiError.invalid(f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        if "params" not in req:
            raise ApiError.invalid(f"requests.{i}.params: Field required")
        # Params are checked when the request is processed, so one bad request yields an
        # `errored` result instead of failing the whole batch, as on the API.
        out.append((custom_id, req["params"]))
    return out
