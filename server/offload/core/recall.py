"""A bounded in-memory store of recent requests, so the host can ask for a redo by id.

Bounded by count, bytes and age: a redo is for an answer the host just read, and keeping
prompts (which may hold file contents) longer or on disk would keep what the user did not ask
offload to keep. Pure: the clock is passed in.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    size: int
    at: float


class Recall(Generic[T]):
    def __init__(self, clock: Callable[[], float], *, max_items: int, max_bytes: int, max_age_s: float) -> None:
        self._clock = clock
        self._max_items, self._max_bytes, self._max_age = max_items, max_bytes, max_age_s
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, key: str, value: T, size: int) -> None:
        if size > self._max_bytes:
            return  # too big to keep: a redo of it asks the host to resend
        with self._lock:
            self._drop(key)
            self._entries[key] = _Entry(value, size, self._clock())
            self._bytes += size
            self._evict()

    def swap(self, key: str, expected: T, value: T) -> bool:
        """Replace `key`'s value if it is still `expected`, keeping its age and place: a claim."""
        with self._lock:
            self._evict()
            entry = self._entries.get(key)
            if entry is None or entry.value is not expected:
                return False
            self._entries[key] = _Entry(value, entry.size, entry.at)
            return True

    def get(self, key: str) -> T | None:
        with self._lock:
            self._evict()
            entry = self._entries.get(key)
            return None if entry is None else entry.value

    def _drop(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size

    def _evict(self) -> None:
        oldest_allowed = self._clock() - self._max_age
        while self._entries:
            key, first = next(iter(self._entries.items()))
            if len(self._entries) > self._max_items or self._bytes > self._max_bytes or first.at < oldest_allowed:
                self._drop(key)
            else:
                break


def new_call_id() -> str:
    """The id of an answer the host may ask to redo (routed_complete's and a batch item's alike)."""
    return "rc_" + secrets.token_hex(4)
