"""The models the emulator knows and their limits.

Minimum cacheable prefix lengths are the ones in docs/architecture.md (shared with
policies/pricing.yaml); context/output limits are plausible stand-ins.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ApiError


@dataclass(frozen=True)
class ModelSpec:
    id: str
    display_name: str
    created_at: str  # RFC 3339
    line: str
    min_cacheable: int
    max_input_tokens: int
    max_tokens: int
    lifecycle: str = "active"

    def info(self) -> dict[str, object]:
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
            "lifecycle": self.lifecycle,
            "line": self.line,
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
            "deprecated_at": None,
            "retires_at": None,
        }


_M = ModelSpec
# Listed newest first, the order GET /v1/models returns.
MODELS: tuple[ModelSpec, ...] = (
    _M("claude-haiku-5-5", "Claude Haiku 5.5", "2026-09-01T00:00:00Z", "haiku", 2048, 400_000, 64_000),
    _M("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-09-01T00:00:00Z", "sonnet", 1024, 1_000_000, 128_000),
    _M("claude-opus-5-5", "Claude Opus 5.5", "2026-09-01T00:00:00Z", "opus", 1024, 1_000_000, 128_000),
    _M("claude-fable-5-1", "Claude Fable 5.1", "2026-07-01T00:00:00Z", "fable", 1024, 1_000_000, 128_000),
    _M("claude-opus-5", "Claude Opus 5", "2026-03-01T00:00:00Z", "opus", 4096, 1_000_000, 128_000),
    _M("claude-sonnet-5", "Claude Sonnet 5", "2026-03-01T00:00:00Z", "sonnet", 1024, 1_000_000, 64_000),
    _M("claude-opus-4-8", "Claude Opus 4.8", "2026-01-15T00:00:00Z", "opus", 4096, 1_000_000, 128_000),
    _M("claude-opus-4-7", "Claude Opus 4.7", "2025-12-01T00:00:00Z", "opus", 4096, 1_000_000, 128_000),
    _M("claude-opus-4-6", "Claude Opus 4.6", "2025-11-01T00:00:00Z", "opus", 4096, 1_000_000, 128_000),
    _M("claude-sonnet-4-6", "Claude Sonnet 4.6", "2025-11-01T00:00:00Z", "sonnet", 1024, 1_000_000, 64_000),
    _M("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-01T00:00:00Z", "haiku", 4096, 200_000, 64_000),
)
_BY_ID = {m.id: m for m in MODELS}


def get_model(model_id: object) -> ModelSpec:
    if not isinstance(model_id, str) or not model_id:
        raise ApiError.invalid("model: Field required (a model id string, e.g. 'claude-haiku-5-5')")
    spec = _BY_ID.get(model_id)
    if spec is None:
        known = ", ".join(sorted(_BY_ID))
        raise ApiError(404, "not_found_error", f"model: {model_id} (unknown to the emulator; known: {known})")
    return spec
