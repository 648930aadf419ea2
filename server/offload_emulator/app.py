"""HTTP surface: the Starlette routes plus a raw ASGI front for auth, faults and ids.

The front is raw ASGI (not Starlette middleware) because a `drop` fault must close the
connection before any response bytes exist, which needs the server's transport.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import streaming
from .errors import ApiError
from .faults import Decision
from .models import MODELS, get_model
from .prompt import parse_count
from .state import EmulatorState, RequestRecord

log = logging.getLogger("offload_emulator")

Handler = Callable[[Request, EmulatorState], Awaitable[Response]]


def _error_response(err: ApiError, request_id: str) -> JSONResponse:
    return JSONResponse(err.body(request_id), status_code=err.status, headers=err.headers)


def _retry_hints(err: ApiError, ms: int | None) -> ApiError:
    if err.status == 429:
        err.headers["retry-after"] = str(max(1, math.ceil((ms or 1000) / 1000)))
    if ms is not None:
        err.headers["retry-after-ms"] = str(ms)
    return err


def _rate_usage(usage: dict[str, Any] | None) -> tuple[int, int]:
    """(uncached input, output) a Messages call spends against the per-minute limits."""
    if not usage:
        return 0, 0
    return usage["input_tokens"] + usage["cache_creation_input_tokens"], usage["output_tokens"]


def _record(request: Request) -> RequestRecord:
    record = request.scope["offload.record"]
    assert isinstance(record, RequestRecord)
    return record


def _endpoint(state: EmulatorState, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        record = _record(request)
        try:
            return await handler(request, state)
        except ApiError as err:
            if err.status == 429 or err.status >= 500:  # scripted errors are faults too
                _retry_hints(err, state.config.retry_after_ms)
            return _error_response(err, record.request_id)
        except ClientDisconnect:
            # The caller went away mid-body (a killed client, a timeout): nobody reads the answer.
            log.info("client disconnected before its request body arrived")
            record.status = 499
            return Response(status_code=499)
        except Exception:  # a bug here must still look like the API's 500, not a dropped socket
            log.exception("emulator handler failed")
            return _error_response(ApiError.for_status(500), record.request_id)

    return run


async def _json_body(request: Request, limit: int) -> Any:
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "request_too_large", f"Request exceeds the maximum allowed size of {limit} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError.invalid(f"request body is not valid JSON: {exc}") from None
    _record(request).body = data
    return data


def _limit(request: Request, default: int = 20) -> int:
    raw = request.query_params.get("limit", str(default))
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError.invalid(f"limit: expected an integer, got {raw!r}") from None
    if not 1 <= limit <= 1000:
        raise ApiError.invalid("limit: must be between 1 and 1000")
    return limit


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# -- handlers -------------------------------------------------------------------------
async def create_message(request: Request, state: EmulatorState) -> Response:
    body = await _json_body(request, state.config.max_message_body)
    record = _record(request)
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        record.model = body["model"]
    message = state.run_message(body, arrived=record.seq)
    record.usage = message["usage"]
    if body.get("stream"):
        return StreamingResponse(_stream(message, state.config.stream_delay_s), media_type="text/event-stream")
    return JSONResponse(message)


async def _stream(message: dict[str, Any], delay_s: float) -> AsyncIterator[bytes]:
    for event in streaming.events(message):
        yield streaming.sse(event)
        # Let other requests interleave (and a test kill the server mid-stream).
        await asyncio.sleep(delay_s)


async def count_tokens(request: Request, state: EmulatorState) -> Response:
    body = await _json_body(request, state.config.max_message_body)
    prompt = parse_count(body)
    _record(request).model = prompt.model.id
    return JSONResponse({"input_tokens": prompt.total_tokens})


async def create_batch(request: Request, state: EmulatorState) -> Response:
    body = await _json_body(request, state.config.max_batch_body)
    return JSONResponse(state.batches.create(body, _base_url(request)))


async def list_batches(request: Request, state: EmulatorState) -> Response:
    q = request.query_params
    page = state.batches.list(_base_url(request), _limit(request), q.get("after_id"), q.get("before_id"))
    return JSONResponse(page)


async def retrieve_batch(request: Request, state: EmulatorState) -> Response:
    return JSONResponse(state.batches.retrieve(request.path_params["batch_id"], _base_url(request)))


async def cancel_batch(request: Request, state: EmulatorState) -> Response:
    return JSONResponse(state.batches.cancel(request.path_params["batch_id"], _base_url(request)))


async def delete_batch(request: Request, state: EmulatorState) -> Response:
    return JSONResponse(state.batches.delete(request.path_params["batch_id"]))


async def batch_results(request: Request, state: EmulatorState) -> Response:
    data = state.batches.results_jsonl(request.path_params["batch_id"])
    return Response(data, media_type="application/binary")


async def list_models(request: Request, state: EmulatorState) -> Response:
    limit = _limit(request)
    ids = [m.id for m in MODELS]
    after, before = request.query_params.get("after_id"), request.query_params.get("before_id")
    start, end = 0, len(ids)
    for name, value in (("after_id", after), ("before_id", before)):
        if value is not None and value not in ids:
            raise ApiError.invalid(f"{name}: unknown model {value}")
    if after is not None:
        start = ids.index(after) + 1
        end = min(len(ids), start + limit)
    elif before is not None:
        end = ids.index(before)
        start = max(0, end - limit)
    else:
        end = min(len(ids), limit)
    data = [m.info() for m in MODELS[start:end]]
    has_more = start > 0 if before is not None else end < len(ids)
    return JSONResponse(
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def retrieve_model(request: Request, state: EmulatorState) -> Response:
    return JSONResponse(get_model(request.path_params["model_id"]).info())


def create_app(state: EmulatorState) -> ASGIApp:
    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, _endpoint(state, handler), methods=[method])

    routes = [
        route("/v1/messages", create_message, "POST"),
        route("/v1/messages/count_tokens", count_tokens, "POST"),
        route("/v1/messages/batches", create_batch, "POST"),
        route("/v1/messages/batches", list_batches, "GET"),
        route("/v1/messages/batches/{batch_id}", retrieve_batch, "GET"),
        route("/v1/messages/batches/{batch_id}", delete_batch, "DELETE"),
        route("/v1/messages/batches/{batch_id}/cancel", cancel_batch, "POST"),
        route("/v1/messages/batches/{batch_id}/results", batch_results, "GET"),
        route("/v1/models", list_models, "GET"),
        route("/v1/models/{model_id:path}", retrieve_model, "GET"),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = (
            f"Not found: {request.method} {request.url.path}"
            if exc.status_code == 404
            else f"Method {request.method} not allowed for {request.url.path}"
        )
        return _error_response(ApiError.for_status(exc.status_code, message), _record(request).request_id)

    inner = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return Front(inner, state)


class Front:
    """Request ids, the request log, auth, body-size pre-check and fault injection."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        retry = headers.get("x-stainless-retry-count", "0")
        record = RequestRecord(
            request_id=state.new_id("req_"),
            method=scope["method"],
            path=scope["path"],
            at=state.clock.now(),
            retry_count=int(retry) if retry.isdigit() else 0,
            trace={k: v for k, v in headers.items() if k in ("traceparent", "tracestate")},
        )
        state.log(record)
        scope["offload.record"] = record

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.append("request-id", record.request_id)
                if record.path == "/v1/messages" and record.method == "POST":
                    for name, value in state.rate_window.note(*_rate_usage(record.usage)).items():
                        out.append(name, value)
                record.status = message["status"]
            await send(message)

        err = self._auth(headers) or self._size(scope["path"], headers)
        if err is not None:
            await _error_response(err, record.request_id)(scope, receive, send_with_id)
            return
        decision = state.faults.decide()
        if decision.latency_s > 0:
            await asyncio.sleep(decision.latency_s)
        if decision.kind is not None:
            record.fault = decision.kind
            if decision.kind == "drop":
                await self._drop(send, send_with_id)
                return
            await _error_response(self._fault_error(decision), record.request_id)(scope, receive, send_with_id)
            return
        await self.app(scope, receive, send_with_id)

    def _auth(self, headers: dict[str, str]) -> ApiError | None:
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "").strip()
        if not key:
            return ApiError(
                401,
                "authentication_error",
                "missing authentication: send 'Authorization: Bearer <key>' (or x-api-key)",
            )
        expected = self.state.config.api_key
        if expected is not None and key != expected:
            return ApiError(401, "authentication_error", "invalid x-api-key")
        return None

    def _size(self, path: str, headers: dict[str, str]) -> ApiError | None:
        cfg = self.state.config
        limit = cfg.max_batch_body if path.startswith("/v1/messages/batches") else cfg.max_message_body
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return ApiError(413, "request_too_large", f"Request exceeds the maximum allowed size of {limit} bytes")
        return None

    def _fault_error(self, decision: Decision) -> ApiError:
        return _retry_hints(ApiError.for_status(decision.status or 500), self.state.config.retry_after_ms)

    async def _drop(self, send: Send, fallback: Send) -> None:
        # uvicorn's `send` is a bound method of its per-request cycle, which owns the
        # transport: aborting it closes the socket with no response bytes at all.
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is not None and hasattr(transport, "abort"):
            transport.abort()
            # Tell uvicorn the peer is gone so it does not try to send its own 500.
            cycle.disconnected = True  # type: ignore[union-attr]
            return
        # Other servers: start a response and stop mid-way; clients see a broken response.
        await fallback({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        raise ConnectionAbortedError("emulated dropped connection")
