"""The one boundary to the Claude API: calls, error mapping, usage capture.

Nothing else in offload imports `anthropic`. Requests are assembled by the pure
`offload.core.request.build_params`; this module only sends them and maps what comes back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anthropic

from offload.config.settings import Settings
from offload.core.errors import InputError, MissingApiKeyError, UpstreamError
from offload.core.pricing import Usage


@dataclass(frozen=True)
class Completion:
    text: str
    stop_reason: str | None
    usage: Usage
    model: str
    request_id: str | None
    message_id: str


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


@dataclass(frozen=True)
class BatchItemResult:
    custom_id: str
    result_type: str  # succeeded | errored | canceled | expired
    text: str = ""
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    error: str | None = None


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
        return UpstreamError(
            "could not reach the Claude API after retries (connection failed or timed out); try again later",
            kind="connection_error",
        )
    return UpstreamError(f"Claude API client error: {type(exc).__name__}", kind=type(exc).__name__)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except anthropic.APIError as exc:
        raise _upstream(exc) from None


class ClaudeClient:
    """Async client for the calls offload makes. Construct through `ClaudeClient.from_settings`."""

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings, *, max_retries: int = 2, timeout: float = 600.0) -> ClaudeClient:
        if not settings.api_key:
            raise MissingApiKeyError()
        return cls(
            anthropic.AsyncAnthropic(
                api_key=settings.api_key,
                base_url=settings.base_url,
                max_retries=max_retries,
                timeout=timeout,
            )
        )

    async def close(self) -> None:
        await self._client.close()

    async def create(self, params: dict[str, Any]) -> Completion:
        try:
            raw = await self._client.messages.with_raw_response.create(**params)
            message = await raw.parse()
        except anthropic.BadRequestError as exc:
            raise InputError(f"the Claude API rejected the request: {_upstream(exc)}") from None
        except anthropic.APIError as exc:
            raise _upstream(exc) from None
        return Completion(
            text=_text_of(message.content),
            stop_reason=message.stop_reason,
            usage=Usage.from_api(message.usage),
            model=message.model,
            request_id=raw.headers.get("request-id"),
            message_id=message.id,
        )

    async def count_tokens(self, params: dict[str, Any]) -> int:
        """The prompt tokens of `params` as the API counts them (the endpoint is free)."""
        fields = {k: params[k] for k in ("model", "system", "messages", "tools") if k in params}
        with _mapped_errors():
            counted = await self._client.messages.count_tokens(**fields)
        return int(counted.input_tokens)

    async def batch_create(self, requests: list[dict[str, Any]]) -> BatchInfo:
        with _mapped_errors():
            batch = await self._client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        return _batch_info(batch)

    async def batch_retrieve(self, batch_id: str) -> BatchInfo:
        with _mapped_errors():
            batch = await self._client.messages.batches.retrieve(batch_id)
        return _batch_info(batch)

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchItemResult]:
        with _mapped_errors():
            decoder = await self._client.messages.batches.results(batch_id)
            async for line in decoder:
                yield _item_result(line)


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
