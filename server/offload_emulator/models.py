"""The models the emulator knows and their limits.

This table is the one source of minimum cacheable prefix lengths: policies/pricing.yaml
carries the same numbers and tests/test_pricing.py fails when the two drift apart.

Sources (checked 2026-11):
- Minimum cacheable prompt length, "Prompt caching: cache limitations",
  https://platform.claude.com/docs/en/build-with-claude/prompt-caching#cache-limitations
  ("512 tokens for ... Claude Opus 5.5, Claude Opus 5, Claude Sonnet 5.5, Claude Fable 5 ...;
  2,048 for ... Claude Opus 4.7; 4,096 for Claude Opus 4.6 ...; 1,024 for Claude Opus 4.8,
  Claude Sonnet 5, Claude Sonnet 4.6 ...; 4,096 for Claude Haiku 4.5"). Haiku 5.5 is not
  listed; it keeps 2,048.
- Output limits, anthropics/skills skills/claude-api/shared/models.md: 128K max output for
  every 4.6+ / 5.x model listed there (Sonnet 4.6 and Sonnet 5 included), 64K for Haiku 4.5.
- Prefill: "Claude 4.6 and later models ... do not support prefilling assistant messages"
  (https://platform.claude.com/docs/en/api/errors); Haiku 4.5 predates 4.6 and keeps it.
- Dated ids: only models older than 4.6 have them (models.md: claude-haiku-4-5-20251001).
Context sizes of unlisted models are plausible stand-ins.
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
    prefill: bool = False  # a final assistant message is accepted (False: 400, as on 4.6+)
    dated_ids: tuple[str, ...] = ()  # snapshot ids that name this model too
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
    _M("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-09-01T00:00:00Z", "sonnet", 512, 1_000_000, 128_000),
    _M("claude-opus-5-5", "Claude Opus 5.5", "2026-09-01T00:00:00Z", "opus", 512, 1_000_000, 128_000),
    _M("claude-fable-5-1", "Claude Fable 5.1", "2026-07-01T00:00:00Z", "fable", 512, 1_000_000, 128_000),
    _M("claude-opus-5", "Claude Opus 5", "2026-03-01T00:00:00Z", "opus", 512, 1_000_000, 128_000),
    _M("claude-sonnet-5", "Claude Sonnet 5", "2026-03-01T00:00:00Z", "sonnet", 1024, 1_000_000, 128_000),
    _M("claude-opus-4-8", "Claude Opus 4.8", "2026-01-15T00:00:00Z", "opus", 1024, 1_000_000, 128_000),
    _M("claude-opus-4-7", "Claude Opus 4.7", "2025-12-01T00:00:00Z", "opus", 2048, 1_000_000, 128_000),
    _M("claude-opus-4-6", "Claude Opus 4.6", "2025-11-01T00:00:00Z", "opus", 4096, 1_000_000, 128_000),
    _M("claude-sonnet-4-6", "Claude Sonnet 4.6", "2025-11-01T00:00:00Z", "sonnet", 1024, 1_000_000, 128_000),
    _M(
        "claude-haiku-4-5",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z",
        "haiku",
        4096,
        200_000,
        64_000,
        prefill=True,
        dated_ids=("claude-haiku-4-5-20251001",),
    ),
)
_BY_ID = {name: m for m in MODELS for name in (m.id, *m.dated_ids)}


def get_model(model_id: object) -> ModelSpec:
    if not isinstance(model_id, str) or not model_id:
        raise ApiError.invalid("model: Field required (a model id string, e.g. 'claude-haiku-5-5')")
    spec = _BY_ID.get(model_id)
    if spec is None:
        known = ", ".join(sorted(m.id for m in MODELS))
        raise ApiError(404, "not_found_error", f"model: {model_id} (unknown to the emulator; known: {known})")
    return spec
