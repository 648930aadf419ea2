"""Paid work that outlives a cancelled caller.

A host may cancel a tool call at any moment, also after the API has answered (and billed) and
before the answer is read and recorded: cancelling the call there would lose a paid answer from
the ledger and free its hold as if nothing had been spent. So a paid call and its bookkeeping run
in a task the server owns: a cancelled caller stops waiting at once, while the call finishes, its
cost is recorded and its hold released. A cancel stops the wait, not the bill.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup

from offload.core.errors import UpstreamError

T = TypeVar("T")
log = logging.getLogger("offload.metering")

# How long a closing server waits for calls still in flight to be answered and recorded. A host
# that closes stdin gives its server 2 s before SIGTERM, then 2 s before SIGKILL (the mcp SDK's
# stdio client: PROCESS_TERMINATION_TIMEOUT, FORCE_KILL_TIMEOUT); a server killed while waiting
# leaves its holds for its lease, so it stops waiting before the host's patience ends.
SHUTDOWN_GRACE_S = 1.5


class Detached:
    """Runs paid calls in the server's own task group (inline until `open` has entered it)."""

    def __init__(self) -> None:
        self._tg: TaskGroup | None = None
        self._running = 0
        self._idle = anyio.Event()

    @property
    def running(self) -> int:
        return self._running

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
                    # Calls in flight get `grace` to be answered and recorded; past it (or at once,
                    # when the close itself is cancelled) they are stopped: a call not yet answered
                    # releases its hold, one whose answer is in hand is still recorded (shielded).
                    with anyio.move_on_after(grace):
                        while self._running:
                            await self._idle.wait()
                finally:
                    if self._running:
                        log.warning("stopping %d call(s) still in flight as the server closes", self._running)
                    tg.cancel_scope.cancel()

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """`await work()`, in a task a cancellation of the caller does not reach."""
        tg = self._tg
        if tg is None:
            return await work()
        outcome: list[tuple[bool, object]] = []
        done = anyio.Event()

        async def task() -> None:
            try:
                outcome.append((True, await work()))
            except Exception as exc:  # handed to the caller; logged if it has gone
                outcome.append((False, exc))
                if not waiting:
                    log.warning("a call whose caller had gone failed: %r", exc)
            finally:
                done.set()
                self._running -= 1
                if not self._running:
                    self._idle.set()
                    self._idle = anyio.Event()

        waiting = True
        self._running += 1
        tg.start_soon(task)
        try:
            await done.wait()
        finally:
            waiting = False
        if not outcome:  # the server is closing and cancelled the call
            raise UpstreamError("the call was stopped because the server is shutting down; ask again")
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[return-value]
        assert isinstance(value, Exception)
        raise value
