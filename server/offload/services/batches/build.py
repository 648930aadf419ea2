"""Pure batch building: input modes -> request specs -> API params, estimates and the split.

No I/O here: file contents arrive already read. The shared instruction prefix (system, then
the template's static text before the first per-item placeholder) is laid out first and put
under a cache breakpoint, because the API caches byte-exact prefixes across the requests of
a batch (best-effort) and a 1h write is repaid after a handful of reads at 0.1x.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from offload.core.errors import InputError
from offload.core.request import Prompt, build_params
from offload.core.text import clip
from offload.core.tokens import approx_tokens, request_upper_bound

MAX_REQUESTS_PER_BATCH = 100_000
# The API's limit is 256 MB per create body; stay under the decimal reading of it and keep
# room for the envelope so a part is never refused for a few bytes.
MAX_BATCH_BYTES = 256_000_000 - 64 * 1024
_ENVELOPE_BYTES = len('{"requests":[]}')
TYPICAL_OUTPUT_TOKENS = 500  # what "typical" assumes per answer; the reservation uses max_tokens
_REQUEST_KEYS = ("prompt", "system", "custom_id")
_LABEL_MAX = 200


@dataclass(frozen=True)
class SubmitArgs:
    requests: tuple[dict[str, Any], ...] = ()
    template: str | None = None
    items: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    system: str | None = None
    task: str | None = None
    tier: str | None = None
    max_tokens: int | None = None
    retry_failed: str | None = None
    difficulty: str | None = None
    must_match: str | None = None
    response_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class Shared:
    """What every request of a batch has in common (stored once per batch as JSON)."""

    model: str
    max_tokens: int
    system: str | None = None
    prefix: str | None = None  # the template's static text before its first placeholder
    ttl: str = "1h"  # "" places no breakpoint: caching the shared prefix was not expected to pay
    min_cacheable: int = 1024
    instruction: str | None = None  # a response_schema's "reply with JSON ...", after the cached system

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> Shared:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Spec:
    """One request: the per-item text, plus a system prompt when it differs per request."""

    label: str
    body: str
    system: str | None = None


def mode_of(args: SubmitArgs) -> str:
    """Which of the exclusive input modes the caller used: requests | items | files | retry."""
    given = [
        name
        for name, on in (
            ("requests", bool(args.requests)),
            ("template+items", bool(args.items)),
            ("template+files", bool(args.files)),
            ("retry_failed", args.retry_failed is not None),
        )
        if on
    ]
    how = (
        "send exactly one of: requests=[{prompt, system?, custom_id?}], template + items "
        "(template uses {item}), template + files (template uses {content} and optionally {path}), "
        "or retry_failed=<batch id>"
    )
    if len(given) != 1:
        what = "nothing to run" if not given else f"{' and '.join(given)} together"
        raise InputError(f"batch_submit got {what}; {how}")
    mode = given[0]
    if mode == "requests" and args.template is not None:
        raise InputError(f"template is not used with requests; {how}")
    if mode in ("template+items", "template+files") and not (args.template or "").strip():
        raise InputError(f"{mode.split('+')[1]} need a template; {how}")
    settings = (args.template, args.system, args.task, args.tier, args.max_tokens, args.difficulty, args.must_match)
    if mode == "retry_failed" and (any(settings) or args.response_schema is not None):
        raise InputError("retry_failed resubmits the failed items with their original settings; send only retry_failed")
    return mode.removeprefix("template+").removesuffix("_failed")


def _label(text: str) -> str:
    one_line = " ".join(text.split())
    return clip(one_line, _LABEL_MAX)


def from_requests(requests: Sequence[dict[str, Any]], system: str | None) -> tuple[Shared | None, list[Spec]]:
    """Explicit requests. A request's own system overrides the batch-wide `system`."""
    specs: list[Spec] = []
    seen: set[str] = set()
    for i, req in enumerate(requests):
        unknown = sorted(set(req) - set(_REQUEST_KEYS))
        if unknown:
            raise InputError(
                f"requests[{i}] has unknown key(s) {', '.join(unknown)}; each request takes "
                "prompt (required), system and custom_id"
            )
        prompt = req.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"requests[{i}].prompt is missing or empty; send the text to run as prompt")
        own_system = req.get("system")
        if own_system is not None and not isinstance(own_system, str):
            raise InputError(f"requests[{i}].system must be a string")
        label = req.get("custom_id")
        if label is None:
            label = f"request {i}"
        elif not isinstance(label, str) or not label.strip():
            raise InputError(f"requests[{i}].custom_id must be a non-empty string")
        elif label in seen:
            raise InputError(f"requests[{i}].custom_id {label!r} is used twice; custom_ids must be unique")
        seen.add(label)
        specs.append(Spec(label=label, body=prompt, system=own_system if own_system != system else None))
    return None, specs


def split_template(template: str, placeholders: Sequence[str]) -> tuple[str, str]:
    """(static prefix, the rest starting at the first placeholder)."""
    hits = [template.find(p) for p in placeholders if p in template]
    if not hits:
        return template, ""
    first = min(hits)
    return template[:first], template[first:]


def from_items(template: str, items: Sequence[str]) -> tuple[str, list[Spec]]:
    if "{item}" not in template:
        raise InputError("template has no {item} placeholder; write where each item goes, e.g. 'Classify: {item}'")
    prefix, rest = split_template(template, ["{item}"])
    # str.replace, not str.format: templates often contain JSON braces.
    return prefix, [Spec(label=_label(item), body=rest.replace("{item}", item)) for item in items]


def from_files(template: str, files: Sequence[tuple[str, str]]) -> tuple[str, list[Spec]]:
    """`files` are (shown path, content) pairs the server has already read under the roots."""
    if "{content}" not in template:
        raise InputError(
            "template has no {content} placeholder; write where each file's text goes, "
            "e.g. 'Summarize {path}:\\n{content}'"
        )
    prefix, rest = split_template(template, ["{path}", "{content}"])
    specs = []
    for path, content in files:
        # {path} first so a file whose text contains "{path}" is not rewritten.
        body = rest.replace("{content}", "\0content\0").replace("{path}", path).replace("\0content\0", content)
        specs.append(Spec(label=path, body=body))
    return prefix, specs


def prompt_for(shared: Shared, spec: Spec) -> Prompt:
    """One request's prompt: its own system prompt, or the batch's shared one."""
    own = spec.system is not None
    return Prompt(
        prompt=spec.body,
        system=spec.system if own else shared.system,
        prefix=shared.prefix,
        instruction=shared.instruction,
        shared_system=not own,
    )


def params_for(shared: Shared, spec: Spec) -> dict[str, Any]:
    """Messages API params for one request: stable parts first, breakpoints where they can pay."""
    return build_params(
        shared.model,
        prompt_for(shared, spec),
        max_tokens=shared.max_tokens,
        ttl=shared.ttl,
        min_cacheable=shared.min_cacheable,
    )


def custom_id(idx: int) -> str:
    return f"i{idx}"


def index_of(custom: str) -> int | None:
    m = re.fullmatch(r"i(\d{1,9})", custom)
    return int(m.group(1)) if m else None


def request_line(shared: Shared, spec: Spec, idx: int) -> dict[str, Any]:
    return {"custom_id": custom_id(idx), "params": params_for(shared, spec)}


def line_json(line: dict[str, Any]) -> bytes:
    """A request line as sent in a create body (`line_bytes` counts exactly these bytes)."""
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def line_bytes(line: dict[str, Any]) -> int:
    return len(line_json(line))


def input_upper_bound(shared: Shared, spec: Spec) -> int:
    system = spec.system if spec.system is not None else shared.system
    return request_upper_bound([system or "", shared.instruction or "", shared.prefix or "", spec.body])


def input_typical(shared: Shared, spec: Spec) -> int:
    system = spec.system if spec.system is not None else shared.system
    shared_text = (shared.instruction or "") + (shared.prefix or "")
    return approx_tokens(system or "") + approx_tokens(shared_text) + approx_tokens(spec.body)


def split(
    sizes: Iterable[int], *, max_count: int = MAX_REQUESTS_PER_BATCH, max_bytes: int = MAX_BATCH_BYTES
) -> list[int]:
    """Part number for each request, in order: a new part starts when either limit would be passed.

    `sizes` are each request line's JSON bytes; a separating comma is counted per line.
    """
    parts: list[int] = []
    part, count, used = 0, 0, _ENVELOPE_BYTES
    for i, size in enumerate(sizes):
        need = size + 1
        if need + _ENVELOPE_BYTES > max_bytes:
            raise InputError(
                f"request {i} alone is {size:,} bytes of JSON, over the API's per-batch limit; "
                "send a smaller prompt or fewer files per request"
            )
        if count and (count >= max_count or used + need > max_bytes):
            part, count, used = part + 1, 0, _ENVELOPE_BYTES
        parts.append(part)
        count += 1
        used += need
    return parts


def chunks(it: Iterable[Any], size: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for x in it:
        buf.append(x)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf
