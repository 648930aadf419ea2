"""The one small error tree. `str(exc)` is written for the model that called the tool.

    OffloadError                 base
    ├── ConfigError              bad policy/pricing/settings file: names the file and field path
    │   └── UnpricedModelError   a model missing from the price table
    ├── InputError               unusable tool input: what was wrong, what to send instead
    │   └── PathRefusedError     outside the allowed roots, symlink out, too large, missing
    ├── BudgetExceededError      which budget, spent/limit, remaining, when it resets
    ├── MissingApiKeyError       ANTHROPIC_API_KEY is not set
    ├── UpstreamError            the Claude API failed after the SDK's retries
    └── LedgerUnavailableError   the ledger file could not be written (locked past retries, disk full)

Only `tools.py` turns these into MCP `ToolError`s.
"""

from __future__ import annotations


class OffloadError(Exception):
    """Base of every error offload raises on purpose."""


class ConfigError(OffloadError):
    """A configuration file is invalid; the message names the file and the field."""


class UnpricedModelError(ConfigError):
    def __init__(self, model: str, table: str) -> None:
        super().__init__(f"model {model!r} has no price in {table}; add it there (offload never prices a model at $0)")
        self.model = model


class InputError(OffloadError):
    """The caller sent something offload cannot use."""


class PathRefusedError(InputError):
    """A path resolved outside the allowed roots, or could not be read within limits."""


class BudgetExceededError(OffloadError):
    def __init__(self, message: str, *, scope: str, remaining_pusd: int, resets_at: str | None) -> None:
        super().__init__(message)
        self.scope = scope
        self.remaining_pusd = remaining_pusd
        self.resets_at = resets_at


class MissingApiKeyError(OffloadError):
    def __init__(self) -> None:
        super().__init__(
            "ANTHROPIC_API_KEY is not set for the offload server; add it to the server's env "
            "(claude mcp add ... -e ANTHROPIC_API_KEY=...) or run `offload demo` to rehearse without a key"
        )


class UpstreamError(OffloadError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        kind: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.request_id = request_id


class LedgerUnavailableError(OffloadError):
    """The ledger could not take a write; nothing was sent, or a paid answer went to the journal."""
