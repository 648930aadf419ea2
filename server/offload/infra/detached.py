"""Paid work that outlives a cancelled caller.

A host may cancel a tool call at any moment, also after the API has answered (and billed) and
before the answer is read and recorded: cancelling the call there would lose a paid answer from
the ledger and free its hold as if nothing had been spent. So a paid call and its bookkeeping run
in a task the server owns: a cancelled caller stops waiting at once, while the call finishes, its
cost is recorded and its hold released. A cancel stops the wait, not the bill.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup

from offload.core.errors import UpstreamError

T = TypeVar("T")
log = logging.getLogger("offload.metering")

# How long a closing server waits for calls still in flight to be answered and recorded. A host
# that closes stdin gives its server 2 s before SIGTERM, then 2 s before SIGKILL (the mcp SDK's
# stdio client: PROCESS_TERMINATION_TIMEOUT, FORCE_KILL_TIMEOUT); a server killed while waiting
# leaves its holds for its lease, so it stops waiting (grace, then the answered grace, then
# closing the ledger) before the host's patience ends.
SHUTDOWN_GRACE_S = 1.0
# Past the grace, a call the API has begun answering (billed) still gets this long to read its
# answer and record it; only calls with no answer begun are stopped at once.
ANSWERED_GRACE_S = 0.3


@dataclass(eq=False)
class _Flight:
    scope: anyio.CancelScope
    answered: bool = False


_flight: ContextVar[_Flight | None] = ContextVar("offload_flight", default=None)

# When the host began closing this process's session (EOF on stdin), if it has: the close's grace
# counts from then, so time the transport spends answering what was already asked comes out of
# it rather than on top of it. One stdio session per process.
_host_closing_since: float | None = None


def host_closing() -> None:
    """The host has begun closing the session (the stdio transport saw EOF)."""
    global _host_closing_since
    if _host_closing_since is None:
        _host_closing_since = time.monotonic()


def _grace_left(grace: float) -> float:
    """What is left of `grace` since the host began closing (taken once: the close it was for)."""
    global _host_closing_since
    since, _host_closing_since = _host_closing_since, None
    return grace if since is None else max(0.0, grace - (time.monotonic() - since))


def mark_answered() -> None:
    """The API has begun answering this task's call (a success's headers are in): it is billed,
    so a closing server must not cut it off before its answer is read and recorded."""
    flight = _flight.get()
    if flight is not None:
        flight.answered = True


def answered() -> bool:
    """Whether the call running in this task has been marked answered."""
    flight = _flight.get()
    return flight is not None and flight.answered


class Detached:
    """Runs paid calls in the server's own task group (inline until `open` has entered it)."""

    def __init__(self) -> None:
        self._tg: TaskGroup | None = None
        self._flights: set[_Flight] = set()
        self._idle = anyio.Event()

    @property
    def running(self) -> int:
        return len(self._flights)

    @asynccontextmanager
    async def open(self, grace_s: float | None = None) -> AsyncIterator[Detached]:
        grace = SHUTDOWN_GRACE_S if grace_s is None else grace_s
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield self
            finally:
                self._tg = None
                try:
                    # Calls in flight get `grace` to be answered and recorded (none when the close
                    # itself is cancelled: SIGTERM after EOF).
                    with anyio.move_on_after(_grace_left(grace)):
                        await self._settled()
                finally:
                    await self._stop(tg)

    async def _settled(self) -> None:
        while self._flights:
            await self._idle.wait()

    async def _stop(self, tg: TaskGroup) -> None:
        """Stop what is still in flight: a call not yet answered releases its hold (nothing billed
        that we can see); one the API is answering gets ANSWERED_GRACE_S more to be recorded."""
        if self._flights:
            log.warning("stopping %d call(s) still in flight as the server closes", len(self._flights))
        for flight in list(self._flights):
            if not flight.answered:
                flight.scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(ANSWERED_GRACE_S):
            await self._settled()
        for flight in list(self._flights):
            flight.scope.cancel()
        tg.cancel_scope.cancel()

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """`await work()`, in a task a cancellation of the caller does not reach."""
        tg = self._tg
        if tg is None:
            return await work()
        outcome: list[tuple[bool, object]] = []
        done = anyio.Event()
        # Shielded: a cancel of the server around it (SIGTERM) reaches a call only through `_stop`,
        # which lets one the API is answering be recorded first.
        flight = _Flight(anyio.CancelScope(shield=True))

        async def task() -> None:
            _flight.set(flight)
            try:
                with flight.scope:
                    outcome.append((True, await work()))
            except Exception as exc:  # handed to the caller; logged if it has gone
                outcome.append((False, exc))
                if not waiting:
                    log.warning("a call whose caller had gone failed: %r", exc)
            finally:
                done.set()
                self._flights.discard(flight)
                if not self._flights:
                    self._idle.set()
                    self._idle = anyio.Event()

        waiting = True
        self._flights.add(flight)
        tg.start_soon(task)
        try:
            await done.wait()
        finally:
            waiting = False
        if not outcome:  # the server is closing and stopped the call
            raise UpstreamError("the call was stopped because the server is shutting down; ask again")
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[return-value]
        assert isinstance(value, Exception)
        raise value
