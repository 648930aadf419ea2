"""stdio without worker threads: the host's pipes read and written by the event loop.

The SDK's stdio transport reads each line from stdin, and writes and flushes each message to
stdout, through a worker thread (anyio.wrap_file): three thread hand-offs per tool call, each a
wake-up of another thread and then of the loop, paid on every call the host makes. Here stdin
and stdout are non-blocking pipes on the loop itself, and the SDK's dispatcher reads parsed
messages from the pipe and writes answers to it directly (`_Inbound`, `_Outbound`: its
ReadStream and WriteStream protocols), without the reader and writer tasks the SDK puts in
between. As the SDK does, the process's own fds 0 and 1 are pointed away from the wire while
serving (stdin at /dev/null, stdout at stderr), so a stray print or a child process can't
corrupt the protocol; the wire uses private duplicates.

Where stdin or stdout is not a pipe or socket (a file, a terminal), the SDK's transport serves
instead (see `pipes_usable`).

Either way, EOF on stdin is held back from the dispatcher while requests already read are still
being answered (`_Unanswered`), for up to EOF_ANSWER_WAIT_S: the SDK's dispatcher cancels every
handler still running at EOF, so a host that writes its last request and closes stdin at once
(`offload serve < requests.jsonl`) lost that answer whenever EOF was read first.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, Protocol, Self

import anyio
import mcp_types as types
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.dispatcher import as_request_id, coerce_request_id
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp.shared.message import SessionMessage
from mcp_types import RequestId

from offload.infra import detached

# A closing server waits for the host to read what it has not read yet for as long as the host
# keeps reading, and gives up once the host has taken nothing for this long (well within the 2 s
# the SDK's client gives a server after closing stdin).
FINAL_FLUSH_IDLE_S = 0.5
# How long EOF waits for requests already read to be answered. It is part of the close's grace
# for paid calls (infra/detached.py, counted from EOF): a call still running past it is finished
# and recorded there, unanswered, and the close stays within the 2 s a host gives its server.
EOF_ANSWER_WAIT_S = 0.5


def pipes_usable() -> bool:
    """True where the loop can drive both ends: POSIX, stdin and stdout each a pipe or a socket of
    its own, and stdout not the same file as stderr. The loop makes the wire non-blocking, which goes
    for every fd sharing it: a terminal (the shell's too) or a stderr merged into stdout (log lines
    would then fail when the host is slow to read) are left to the SDK's blocking transport, and so
    is one socket serving both ways (inetd-style): the loop's write side watches its fd for the
    reader going away, and requests arriving on that same socket look like it."""
    if os.name != "posix":
        return False
    try:
        wire_in, wire_out, err = (os.fstat(fd) for fd in (0, 1, 2))
    except OSError:
        return False
    if os.path.samestat(wire_out, err) or os.path.samestat(wire_in, wire_out):
        return False
    return all(stat.S_ISFIFO(f.st_mode) or stat.S_ISSOCK(f.st_mode) for f in (wire_in, wire_out))


class _Source(Protocol):
    # What the dispatcher reads (the SDK's ReadStream protocol, private to it): the part used here.
    async def __anext__(self) -> SessionMessage | Exception: ...
    async def aclose(self) -> None: ...


class _Sink(Protocol):
    async def send(self, item: SessionMessage, /) -> None: ...
    async def aclose(self) -> None: ...


class _Unanswered:
    """Requests read from the host and not yet answered (or cancelled by it). Ids are matched as
    the SDK's dispatcher matches them ("7" and 7 are one id; a cancel naming no valid id names
    none), so a cancel it honours is never waited for, and one it ignores never ends a wait."""

    def __init__(self) -> None:
        self._ids: set[RequestId] = set()
        self._changed = anyio.Event()

    def read(self, item: SessionMessage | Exception) -> None:
        if isinstance(item, Exception):
            return
        message = item.message
        if isinstance(message, types.JSONRPCRequest):
            self._ids.add(coerce_request_id(message.id))
        elif isinstance(message, types.JSONRPCNotification) and message.method == "notifications/cancelled":
            # A cancelled request is never answered (the spec forbids it): nothing to wait for.
            self._settle(cancelled_request_id_from_params(message.params))

    def sent(self, item: SessionMessage) -> None:
        message = item.message
        if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
            self._settle(as_request_id(message.id))

    def _settle(self, request_id: RequestId | None) -> None:
        if request_id is None:
            return
        key = coerce_request_id(request_id)
        if key in self._ids:
            self._ids.discard(key)
            self._changed.set()
            self._changed = anyio.Event()

    async def answered(self, limit_s: float = EOF_ANSWER_WAIT_S) -> None:
        detached.host_closing()  # the close's grace for paid calls counts from here
        with anyio.move_on_after(limit_s):
            while self._ids:
                await self._changed.wait()


class _Stream:
    """What the SDK's dispatcher needs of either stream besides reading or sending (its ReadStream
    and WriteStream protocols): closing, and use as a context manager."""

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class _Reading(_Stream):
    """The read side: a subclass gives `__anext__`."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        raise NotImplementedError

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise anyio.EndOfStream from None


class _HeldAtEOF(_Reading):
    """A read stream whose end waits for the requests read from it to be answered."""

    def __init__(self, inner: _Source, unanswered: _Unanswered) -> None:
        self._inner = inner
        self._unanswered = unanswered

    @property
    def last_context(self) -> contextvars.Context | None:
        # The dispatcher reads each message's sender context here (the SDK's context streams).
        return getattr(self._inner, "last_context", None)

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            item = await self._inner.__anext__()
        except StopAsyncIteration:
            await self._unanswered.answered()
            raise
        self._unanswered.read(item)
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Noted(_Stream):
    """A write stream that marks each answer it sends as answered."""

    def __init__(self, inner: _Sink, unanswered: _Unanswered) -> None:
        self._inner = inner
        self._unanswered = unanswered

    async def send(self, item: SessionMessage, /) -> None:
        await self._inner.send(item)
        self._unanswered.sent(item)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _run(server: MCPServer[Any], read: _Source, write: _Sink) -> None:
    # The SDK's own stdio runner does exactly this; the low-level server is not public yet (its
    # in-memory client reaches it the same way).
    lowlevel = server._lowlevel_server
    unanswered = _Unanswered()
    await lowlevel.run(
        _HeldAtEOF(read, unanswered), _Noted(write, unanswered), lowlevel.create_initialization_options()
    )


class _Inbound(_Reading):
    """The read side the SDK's dispatcher iterates: each newline-terminated message, parsed as the
    SDK's own stdio reader does, straight from the pipe (a line that does not parse is handed on as
    the exception, which the dispatcher reports). No reader task and no memory stream between the
    pipe and the dispatcher: each was a task switch per message."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:  # the host closed stdin
            if not exc.partial:
                raise StopAsyncIteration from None
            line = exc.partial
        try:
            text = line.decode("utf-8", errors="replace")  # as the SDK's own text wrapper decodes
            return SessionMessage(types.jsonrpc_message_adapter.validate_json(text, by_name=False))
        except Exception as exc:  # the SDK's own reader hands every parse failure on alike
            return exc


class _Outbound(_Stream):
    """The write side: each message serialized as the SDK's stdio writer does and written to the
    non-blocking pipe by the task that sends it, with no writer task in between. One sender at a
    time writes and waits for the host to take it: while the host is not reading, the others wait
    holding only their message (as they did behind the SDK's writer task), not its serialized
    copy, and one whose request is cancelled meanwhile is never written."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._turn = asyncio.Lock()

    async def send(self, item: SessionMessage, /) -> None:
        async with self._turn:
            if self._writer.is_closing():
                raise anyio.ClosedResourceError
            line = (item.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n").encode("utf-8")
            try:
                self._writer.write(line)
                del line  # the transport holds what the pipe has not taken yet
                await self._writer.drain()
            except ConnectionError as exc:  # the host closed its end: the dispatcher drops what it sends
                raise anyio.BrokenResourceError from exc


@asynccontextmanager
async def _claimed() -> AsyncIterator[tuple[int, int]]:
    """Private duplicates of fds 0 and 1 for the wire; 0 and 1 themselves point away meanwhile.
    On the way out both point at the wire again, blocking or not as the host handed them over (a
    wrapper such as `sh -c` or a launcher shares them, and reads on after this process)."""
    modes = os.get_blocking(0), os.get_blocking(1)
    wire_in, wire_out = os.dup(0), os.dup(1)
    saved_in, saved_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
        yield wire_in, wire_out
    finally:
        os.close(null)
        for fd, saved, blocking in ((0, saved_in, modes[0]), (1, saved_out, modes[1])):
            with suppress(OSError):
                os.dup2(saved, fd)
                os.set_blocking(fd, blocking)
            os.close(saved)


async def _stop_on_signal(
    scope: anyio.CancelScope, wire: tuple[asyncio.ReadTransport, asyncio.StreamReader] | None = None
) -> None:
    """SIGTERM (a host closing, a launcher stopping) or SIGHUP (its terminal gone). The default
    action killed the process with its calls' holds left for its lease (and the wire non-blocking
    for whatever shares it). With the loop's own `wire`, the first signal ends the session the way
    EOF on stdin does: calls in flight get the close's grace (infra/detached.py). At EOF already (a
    host that closed stdin, then lost patience), or on the SDK's transport, whose stdin thread no
    EOF can be fed to, it stops at once: calls not yet answered release their holds."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for _ in signals:
            if wire is None or wire[1].at_eof() or wire[0].is_closing():
                scope.cancel()
                return
            wire[0].close()  # the reader sees EOF


async def _flushed(transport: asyncio.WriteTransport) -> None:
    """Wait while the host reads what is still buffered for it. A host that closed stdin and reads
    no more must not keep this process (it waited for as long as it lived); one that reads slowly
    but steadily must not have its last answer cut off mid-line."""
    left, idle_since = transport.get_write_buffer_size(), time.monotonic()
    while left and not transport.is_closing() and time.monotonic() - idle_since < FINAL_FLUSH_IDLE_S:
        await asyncio.sleep(0.02)
        now_left = transport.get_write_buffer_size()
        if now_left < left:
            idle_since = time.monotonic()
        left = now_left


async def serve(server: MCPServer[Any]) -> None:
    """Serve `server` over this process's stdin and stdout until the host closes stdin."""
    if not pipes_usable():
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            async with stdio_server() as (read, write):
                await _run(server, read, write)
            tg.cancel_scope.cancel()
        return
    loop = asyncio.get_running_loop()
    async with _claimed() as (wire_in, wire_out):
        # A message may be one very long line (a 100k-request batch): no line limit, as the SDK has none.
        reader = asyncio.StreamReader(limit=2**62)
        read_pipe = os.fdopen(wire_in, "rb", buffering=0)
        write_pipe = os.fdopen(wire_out, "wb", buffering=0)
        read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_pipe)
        write_transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, write_pipe)
        writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_on_signal, tg.cancel_scope, (read_transport, reader))
                await _run(server, _Inbound(reader), _Outbound(writer))
                tg.cancel_scope.cancel()
        finally:
            read_transport.close()
            try:
                await _flushed(write_transport)
            finally:
                write_transport.close()
