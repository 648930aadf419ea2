"""The API's error envelope and status/type pairs.

Body: ``{"type": "error", "error": {"type", "message"}, "request_id"}``, with the same id in
the ``request-id`` header (app.py). Types per status follow the API's error list
(https://platform.claude.com/docs/en/api/errors): 402 billing_error, 409 conflict_error,
413 request_too_large, 504 timeout_error, 529 overloaded_error; statuses the list does not
name (408, 502, 503) answer api_error. 429s carry ``retry-after``
(seconds); injected retryable faults also ``retry-after-ms`` (see EmulatorConfig). The
emulator never sends ``x-should-retry``, so the SDK decides by status code alone.
"""

from __future__ import annotations

from typing import Any

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    """An API error response: raised anywhere in request handling, rendered by app.py."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}

    @classmethod
    def invalid(cls, message: str) -> ApiError:
        return cls(400, "invalid_request_error", message)

    @classmethod
    def for_status(cls, status: int, message: str | None = None) -> ApiError:
        type_ = ERROR_TYPES.get(status, "api_error")
        return cls(status, type_, message or _DEFAULT_MESSAGES.get(type_, "Internal server error"))

    def error_object(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}

    def body(self, request_id: str) -> dict[str, Any]:
        return {"type": "error", "error": self.error_object(), "request_id": request_id}


_DEFAULT_MESSAGES = {
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit (emulated)",
    "overloaded_error": "Overloaded (emulated)",
    "api_error": "Internal server error (emulated)",
    "timeout_error": "Request timed out (emulated)",
    "conflict_error": "The request conflicts with the current state of a resource (emulated)",
}
