"""The one boundary to the Claude API: calls, error mapping, usage capture.

Nothing else in offload imports `anthropic`. Requests are assembled by the pure
`offload.core.request.build_params`; this module only sends them and maps what comes back.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anthropic
import anyio
import httpx2
from anthropic.types.messages import MessageBatch
from opentelemetry import trace

from offload.config.settings import Settings
from offload.core import baseline_cache
from offload.core.errors import InputError, MissingApiKeyError, UpstreamError
from offload.core.pricing import Usage
from offload.infra import detached

# The SDK refuses a non-streaming request it expects to outlast its 10-minute timeout:
# 3,600 s x max_tokens / 128,000 > 600 s, i.e. max_tokens > 21,333 (anthropic-sdk-python,
# _base_client._calculate_nonstreaming_timeout; "Streaming is required for operations that may
# take longer than 10 minutes"). offload passes its own timeout, which skips that check, so it
# draws the same line itself: above it a request streams, and a long answer never rides one
# request that a timeout could cut off and a retry would pay for a second time.
STREAM_ABOVE_MAX_TOKENS = 21_333


@dataclass(frozen=True)
class Completion:
    text: str
    stop_reason: str | None
    usage: Usage
    model: str
    request_id: str | None
    message_id: str


class StreamDropped(UpstreamError):
    """A streamed answer broke off after the API had begun answering.

    `partial` holds what the stream reported before it broke (the input side of usage is
    complete from message_start; output_tokens is the last count received, a lower bound), or
    None when nothing arrived. The SDK never retries a stream once it has begun.
    """

    def __init__(self, message: str, *, partial: Completion | None, request_id: str | None) -> None:
        super().__init__(message, kind="stream_dropped", request_id=request_id)
        self.partial = partial


@dataclass(frozen=True)
class BatchInfo:
    id: str
    status: str  # in_progress | canceling | ended
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0
    processing: int = 0
    created_at: datetime | None = None
    ended_at: datetime | None = None
    expires_at: datetime | None = None


class BatchBody:
    """A batch create body, `{"requests":[...]}`, streamed from `lines` (each request's JSON) in
    pieces of about PIECE_BYTES: memory is bounded by the piece and by what `lines` holds at once,
    not by the batch (100,000 requests as dicts, then as the SDK's copy and its JSON, took
    ~500 MB). `size` is the body's exact length, sent as Content-Length; iterating again (an SDK
    retry) starts again from the first line.
    """

    PIECE_BYTES = 1 << 20
    HEAD, TAIL = b'{"requests":[', b"]}"

    def __init__(self, lines: Callable[[], Iterator[bytes]], size: int) -> None:
        self._lines = lines
        self.size = size

    @classmethod
    def length(cls, line_sizes: Iterable[int]) -> int:
        """The body's length for lines of these byte sizes (a comma between two lines)."""
        total = n = 0
        for size in line_sizes:
            total += size
            n += 1
        return len(cls.HEAD) + total + max(0, n - 1) + len(cls.TAIL)

    def __iter__(self) -> Iterator[bytes]:
        piece = bytearray(self.HEAD)
        first = True
        for line in self._lines():
            if not first:
                piece += b","
            piece += line
            first = False
            if len(piece) >= self.PIECE_BYTES:
                yield bytes(piece)
                piece.clear()
        piece += self.TAIL
        yield bytes(piece)


class _AsyncBody:
    """`BatchBody` for the async client (no sync client given): the pieces, rendered on the loop."""

    def __init__(self, body: BatchBody) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._body:
            yield piece


@dataclass(frozen=True)
class BatchItemResult:
    custom_id: str
    result_type: str  # succeeded | errored | canceled | expired
    text: str = ""
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    error: str | None = None


def tracing_installed(provider: trace.TracerProvider) -> bool:
    """Whether a tracer provider is set up, so the SDK's spans of API calls go somewhere."""
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def sdk_spans_wanted(environ: Mapping[str, str]) -> bool:
    """Whether offload's client keeps the SDK's OpenTelemetry spans.

    Without a tracer provider the SDK still starts a span per call, with its attributes, to find it
    records nothing: 0.1-0.2 ms of every routed call. So the spans stay only when a provider was set
    up before the client (`opentelemetry-instrument`, an application's own setup) or an
    ANTHROPIC_OPEN_TELEMETRY* variable is set (the SDK then follows it, `false` included). Without
    them the caller's trace context still goes out with each request (`trace_headers`), as the
    SDK's own propagation sent it.
    """
    if any(key.startswith("ANTHROPIC_OPEN_TELEMETRY") for key in environ):
        return True
    try:
        return tracing_installed(trace.get_tracer_provider())
    except Exception:  # OTEL_PYTHON_TRACER_PROVIDER naming one that does not load: no spans, no crash
        return False


def trace_headers() -> dict[str, str] | None:
    """The caller's trace context (e.g. a host's traceparent carried in an MCP request's _meta) as
    request headers, or None when there is none: what the SDK's propagation would have sent."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    inject = _injector()
    if inject is None:
        return None
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier or None


@functools.cache
def _injector() -> Callable[[dict[str, str]], None] | None:
    # Importing opentelemetry.propagate loads the OTEL_PROPAGATORS it names and raises for one not
    # installed (e.g. xray): that may cost the header, never the client (nor `offload doctor`).
    try:
        return importlib.import_module("opentelemetry.propagate").inject  # type: ignore[no-any-return]
    except Exception:
        return None


async def _request_leaves(request: httpx2.Request) -> None:
    """A Messages request leaves (the SDK retries a failed one: each try comes here)."""
    if request.method == "POST" and request.url.path.endswith("/messages"):
        baseline_cache.request_left()  # the baseline's request would have left now too


async def _answer_begun(response: httpx2.Response) -> None:
    """A Messages call's success has begun to arrive: from here it is billed, so a closing server
    lets it be read and recorded rather than cut it off (infra/detached.py)."""
    if response.is_success and response.request.method == "POST" and response.request.url.path.endswith("/messages"):
        detached.mark_answered()
        baseline_cache.answer_began()  # from now on the baseline model would serve its prefix


def _text_of(content: Sequence[Any]) -> str:
    return "".join(getattr(b, "text", "") for b in content if getattr(b, "type", None) == "text")


def _upstream(exc: anthropic.APIError) -> UpstreamError:
    if isinstance(exc, anthropic.APIStatusError):
        body: dict[str, Any] = exc.body if isinstance(exc.body, dict) else {}
        raw_err = body.get("error")
        err: dict[str, Any] = raw_err if isinstance(raw_err, dict) else {}
        kind = str(err.get("type") or type(exc).__name__)
        message = str(err.get("message") or exc.message)
        hint = {
            401: "the API key was rejected; check ANTHROPIC_API_KEY",
            403: "the key lacks permission for this model or endpoint",
            404: "check the model id in the policy's tiers",
            413: "the request is too large; trim the context or pass fewer files",
            429: "rate limited after retries; try again later or use batch_submit",
            529: "the API is overloaded after retries; try again later or use batch_submit",
        }.get(exc.status_code, "the Claude API failed after retries; try again later")
        return UpstreamError(
            f"Claude API error {exc.status_code} {kind}: {message} ({hint})",
            status=exc.status_code,
            kind=kind,
            request_id=exc.request_id,
        )
    if isinstance(exc, anthropic.APIConnectionError):
        # A typo in ANTHROPIC_BASE_URL must not read as "try again later": say where we knocked.
        url = getattr(getattr(exc, "request", None), "url", None)
        where = f" at {url}" if url is not None else ""
        return UpstreamError(
            f"could not reach the Claude API{where} after retries (connection failed or timed out); "
            "check ANTHROPIC_BASE_URL and the network, or try again later",
            kind="connection_error",
        )
    return UpstreamError(f"Claude API client error: {type(exc).__name__}", kind=type(exc).__name__)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except anthropic.APIError as exc:
        raise _upstream(exc) from None


# Statuses the SDK retries itself (timeouts, conflicts, rate limits, server errors, overload).
_RETRIED = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class ClaudeClient:
    """Async client for the calls offload makes. Construct through `ClaudeClient.from_settings`."""

    def __init__(
        self, client: anthropic.AsyncAnthropic, sync: anthropic.Anthropic | None = None, *, propagate: bool = False
    ) -> None:
        self._client = client
        # The SDK's spans are off (`sdk_spans_wanted`): the trace context is sent by hand instead.
        self._propagate = propagate
        # Batch creates go through a sync client in a worker thread: the SDK transforms and
        # serializes the whole request list (tens of MB for 100k requests) where it is called,
        # and on the event loop that would stall every other tool call for seconds.
        self._sync = sync

    @classmethod
    def from_settings(cls, settings: Settings, *, max_retries: int = 2, timeout: float = 600.0) -> ClaudeClient:
        if not settings.api_key:
            raise MissingApiKeyError()
        options: dict[str, Any] = {
            "api_key": settings.api_key,
            "base_url": settings.base_url,
            "max_retries": max_retries,
            "timeout": timeout,
        }
        spans = sdk_spans_wanted(os.environ)
        if not spans:
            options["open_telemetry"] = False
        # The SDK's own client with its defaults, plus hooks that see each try leave and each answer begin.
        hooks: dict[str, list[Callable[..., Any]]] = {"request": [_request_leaves], "response": [_answer_begun]}
        answers = anthropic.DefaultAsyncHttpxClient(event_hooks=hooks)
        return cls(
            anthropic.AsyncAnthropic(**options, http_client=answers),
            anthropic.Anthropic(**options),
            propagate=not spans,
        )

    def _traced(self) -> dict[str, str] | None:
        return trace_headers() if self._propagate else None

    async def close(self) -> None:
        await self._client.close()
        if self._sync is not None:
            self._sync.close()

    async def _create_batch(self, requests: list[dict[str, Any]] | BatchBody, *, retries: bool) -> Any:
        if isinstance(requests, BatchBody):
            return await self._post_batch_body(requests, retries=retries)
        if self._sync is None:
            client = self._client if retries else self._client.with_options(max_retries=0)
            return await client.messages.batches.create(
                requests=requests,  # type: ignore[arg-type]
                extra_headers=self._traced(),
            )
        sync = self._sync if retries else self._sync.with_options(max_retries=0)
        traced = self._traced()
        return await anyio.to_thread.run_sync(
            lambda: sync.messages.batches.create(requests=requests, extra_headers=traced)  # type: ignore[arg-type]
        )

    async def _post_batch_body(self, body: BatchBody, *, retries: bool) -> Any:
        """The create call with a body streamed from `body` (see `BatchBody`), in a worker thread."""
        headers = {"Content-Type": "application/json", "Content-Length": str(body.size), **(self._traced() or {})}
        if self._sync is None:
            client = self._client if retries else self._client.with_options(max_retries=0)
            return await client.post(
                "/v1/messages/batches", content=_AsyncBody(body), cast_to=MessageBatch, options={"headers": headers}
            )
        sync = self._sync if retries else self._sync.with_options(max_retries=0)
        return await anyio.to_thread.run_sync(
            lambda: sync.post("/v1/messages/batches", content=body, cast_to=MessageBatch, options={"headers": headers})
        )

    async def create(self, params: dict[str, Any]) -> Completion:
        """One Messages call; streamed (and collected) when max_tokens is past the safe line."""
        try:
            if int(params["max_tokens"]) > STREAM_ABOVE_MAX_TOKENS:
                return await self._streamed(params)
            raw = await self._client.messages.with_raw_response.create(**params, extra_headers=self._traced())
            # The JSON as is: only five fields are read, and the SDK's Message model of the whole
            # answer took longer to build than the rest of offload's bookkeeping of one call.
            message = await raw.json()
        except anthropic.BadRequestError as exc:
            raise InputError(f"the Claude API rejected the request: {_upstream(exc)}") from None
        except anthropic.APIError as exc:
            raise _upstream(exc) from None
        if not isinstance(message, dict):
            raise UpstreamError("the Claude API answered with something other than a message; try again later")
        return _completion_of(message, raw.headers.get("request-id"))

    async def _streamed(self, params: dict[str, Any]) -> Completion:
        async with self._client.messages.stream(**params, extra_headers=self._traced()) as stream:
            request_id = stream.response.headers.get("request-id")
            snapshot: Any = None
            try:
                async for _ in stream:
                    snapshot = stream.current_message_snapshot
            except (anthropic.APIError, httpx2.TransportError) as exc:
                partial = _completion(snapshot, request_id) if snapshot is not None else None
                raise StreamDropped(
                    f"the Claude API stream broke off mid-answer ({type(exc).__name__}); the part already "
                    "generated is billed and recorded once; ask again (a shorter max_tokens answers sooner)",
                    partial=partial,
                    request_id=request_id,
                ) from None
            message = await stream.get_final_message()
        return _completion(message, request_id)

    async def list_models(self) -> list[str]:
        """Model ids the API offers (first page): a call that costs nothing, for `offload doctor`."""
        with _mapped_errors():
            page = await self._client.models.list(limit=1000)
        return [m.id for m in page.data]

    async def count_tokens(self, params: dict[str, Any]) -> int:
        """The prompt tokens of `params` as the API counts them (the endpoint is free)."""
        fields = {k: params[k] for k in ("model", "system", "messages", "tools") if k in params}
        with _mapped_errors():
            counted = await self._client.messages.count_tokens(**fields, extra_headers=self._traced())
        return int(counted.input_tokens)

    async def batch_create(self, requests: list[dict[str, Any]] | BatchBody) -> BatchInfo:
        """Create a batch. UpstreamError kind "not_sent": no byte reached the API, nothing exists there.

        The first attempt goes without the SDK's retries: a refused connection then proves the
        batch was never created (so its hold can go at once); after a retry that is unknowable.
        """
        try:
            batch = await self._create_batch(requests, retries=False)
        except anthropic.APIConnectionError as exc:
            if isinstance(exc.__cause__, httpx2.ConnectError):
                raise UpstreamError(
                    "could not connect to the Claude API (nothing was sent); try again later", kind="not_sent"
                ) from None
        except anthropic.APIStatusError as exc:
            if not exc.response.headers.get("x-should-retry") == "true" and exc.status_code not in _RETRIED:
                raise _upstream(exc) from None
        else:
            return _batch_info(batch)
        with _mapped_errors():
            batch = await self._create_batch(requests, retries=True)
        return _batch_info(batch)

    async def batch_retrieve(self, batch_id: str) -> BatchInfo:
        with _mapped_errors():
            batch = await self._client.messages.batches.retrieve(batch_id, extra_headers=self._traced())
        return _batch_info(batch)

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchItemResult]:
        with _mapped_errors():
            decoder = await self._client.messages.batches.results(batch_id, extra_headers=self._traced())
            async for line in decoder:
                yield _item_result(line)


def _completion(message: Any, request_id: str | None) -> Completion:
    return Completion(
        text=_text_of(message.content),
        stop_reason=message.stop_reason,
        usage=Usage.from_api(message.usage),
        model=message.model,
        request_id=request_id,
        message_id=message.id,
    )


def _completion_of(message: dict[str, Any], request_id: str | None) -> Completion:
    """`_completion` from the Messages API's JSON answer."""
    blocks = message.get("content") or ()
    return Completion(
        text="".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text"),
        stop_reason=message.get("stop_reason"),
        usage=Usage.from_api(message.get("usage")),
        model=str(message.get("model", "")),
        request_id=request_id,
        message_id=str(message.get("id", "")),
    )


def _batch_info(batch: Any) -> BatchInfo:
    counts = batch.request_counts
    return BatchInfo(
        id=batch.id,
        status=batch.processing_status,
        succeeded=counts.succeeded,
        errored=counts.errored,
        canceled=counts.canceled,
        expired=counts.expired,
        processing=counts.processing,
        created_at=batch.created_at,
        ended_at=batch.ended_at,
        expires_at=batch.expires_at,
    )


def _item_result(line: Any) -> BatchItemResult:
    result = line.result
    kind = str(result.type)
    if kind == "succeeded":
        message = result.message
        return BatchItemResult(
            custom_id=line.custom_id,
            result_type=kind,
            text=_text_of(message.content),
            stop_reason=message.stop_reason,
            usage=Usage.from_api(message.usage),
            model=message.model,
        )
    error = getattr(result, "error", None)
    detail = getattr(error, "error", error)
    message_text = getattr(detail, "message", None) or (str(detail) if detail else None)
    return BatchItemResult(custom_id=line.custom_id, result_type=kind, error=message_text)
