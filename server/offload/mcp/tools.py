"""Thin MCP tool adapters: validate, call a service, format a compact result.

Descriptions are short on purpose: every host pays for `tools/list` on every turn. Argument
schemas are compacted (no titles, `X | None` shown as plain `X`) for the same reason; the
pydantic argument model still validates every call. Every `OffloadError` becomes a
`ToolError` whose text tells the model what to send instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BeforeValidator, Field, ValidationError

from offload.core.errors import OffloadError
from offload.core.output import Progress, ToolOutput
from offload.core.tenancy import acting_as
from offload.mcp.session import principal, session_id
from offload.metering.metered import budget_warnings, collecting_notes
from offload.services import batches as batch_service
from offload.services import routed, status, summarize, trim_tool
from offload.services.batches import SubmitArgs
from offload.services.routed import RoutedArgs
from offload.services.summarize import SummarizeArgs
from offload.services.trim_tool import TrimArgs
from offload.state import AppState

Ctx = Context[AppState, Any]
log = logging.getLogger("offload.mcp")


def _json_back_to_text(value: Any) -> Any:
    # mcp pre-parses a JSON-looking string sent for any parameter not typed plain `str`: a JSON
    # API response sent as `content`, a system prompt that is a JSON example, a regex like `[0-9]`
    # or a path named `123` must reach the service as the text the caller sent.
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


# An optional free-text argument (see _json_back_to_text).
Text = Annotated[str | None, BeforeValidator(_json_back_to_text)]

# Only the hints that differ from the spec's defaults (not read-only, destructive, open-world):
# every byte here is paid for by the host on every turn.
_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_LOCAL_WRITE = ToolAnnotations(destructive_hint=False, open_world_hint=False)
_CALLS_CLAUDE = ToolAnnotations(destructive_hint=False)


MAX_ERROR_CHARS = 2_000


def bounded(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error that echoes a huge argument back would cost the host its context window."""
    if len(message) <= limit:
        return message
    head, tail = message[: limit * 3 // 4], message[-limit // 5 :]
    return f"{head} …[{len(message) - len(head) - len(tail):,} chars cut]… {tail}"


def _state(ctx: Ctx) -> AppState:
    return ctx.request_context.lifespan_context


def _progress(ctx: Ctx) -> Progress:
    async def report(done: float, total: float | None = None, message: str | None = None) -> None:
        await ctx.report_progress(done, total=total, message=message)

    return report


async def _run(
    ctx: Ctx, call: Callable[[AppState, str], Awaitable[ToolOutput]], *, spends: bool = False
) -> CallToolResult:
    state = _state(ctx)
    try:
        await state.refresh_policy()
        session = session_id(ctx, state)
        with collecting_notes() as notes, acting_as(principal(ctx)):
            out = await call(state, session)
            if spends:  # the caller's own user and project budgets, not the server's
                out = await _with_budget_warnings(state, session, out)
        if notes:
            out = ToolOutput(f"{out.text}\n[{'; '.join(notes)}]", {**out.data, "ledger_warnings": notes})
    except OffloadError as exc:
        raise ToolError(bounded(str(exc))) from None
    except (OSError, RecursionError, MemoryError) as exc:
        # The SDK would say only "Error executing tool"; the model can act on what actually failed.
        log.warning("tool call failed: %r", exc)
        raise ToolError(bounded(f"offload could not complete this call: {type(exc).__name__}: {exc}")) from None
    return CallToolResult(content=[TextContent(type="text", text=out.text)], structured_content=out.data)


async def _with_budget_warnings(state: AppState, session: str, out: ToolOutput) -> ToolOutput:
    """Past a `warn_at` threshold, every tool that spent money says so in its last line."""
    if out.data.get("cost_usd") == "0":  # answered locally: nothing new to warn about
        return out
    warnings = await budget_warnings(state, session)
    if not warnings:
        return out
    return ToolOutput(f"{out.text}\n[budget: {'; '.join(warnings)}]", {**out.data, "budget_warnings": warnings})


async def routed_complete(
    ctx: Ctx,
    prompt: Annotated[str, Field(description="The sub-task.")] = "",
    system: Text = None,
    context_files: Annotated[
        list[str] | None, Field(description="Paths/globs the server reads (don't paste files).")
    ] = None,
    task: Annotated[Text, Field(description="e.g. classify, extract, summarize, code")] = None,
    difficulty: Literal["easy", "medium", "hard"] | None = None,
    tier: Annotated[Text, Field(description="Force a tier: cheap|standard|premium.")] = None,
    max_tokens: Annotated[int | None, Field(ge=1, le=64000)] = None,
    response_schema: Annotated[
        dict[str, Any] | None, Field(description="JSON Schema the answer must pass, else escalate.")
    ] = None,
    must_match: Annotated[Text, Field(description="Regex the answer must match, else escalate.")] = None,
    redo_of: Annotated[Text, Field(description="call_id of a wrong answer: rerun it a tier up.")] = None,
    reason: Text = None,
) -> CallToolResult:
    """Run a sub-task on the cheapest adequate Claude tier. Judge the answer; if wrong, call with redo_of."""

    args = RoutedArgs(
        prompt=prompt,
        system=system,
        context_files=tuple(context_files or ()),
        task=task,
        difficulty=difficulty,
        tier=tier,
        max_tokens=max_tokens,
        response_schema=response_schema,
        must_match=must_match,
        redo_of=redo_of,
        reason=reason,
    )
    return await _run(ctx, lambda state, session: routed.routed_complete(state, session, args, progress=_progress(ctx)))


async def batch_submit(
    ctx: Ctx,
    requests: Annotated[list[dict[str, Any]] | None, Field(description="[{prompt, system?, custom_id?}]")] = None,
    template: Annotated[Text, Field(description="Prompt with {item} (or {path}/{content} for files).")] = None,
    items: list[str] | None = None,
    files: Annotated[list[str] | None, Field(description="Paths/globs; the server reads them.")] = None,
    system: Text = None,
    task: Text = None,
    tier: Text = None,
    max_tokens: Annotated[int | None, Field(ge=1, le=64000)] = None,
    retry_failed: Annotated[Text, Field(description="Batch id whose failed items to resubmit.")] = None,
    difficulty: Literal["easy", "medium", "hard"] | None = None,
    response_schema: dict[str, Any] | None = None,
    must_match: Text = None,
) -> CallToolResult:
    """Queue work nobody waits on at half price (results within 24h). Failed checks re-ask a tier up."""

    args = SubmitArgs(
        requests=tuple(requests or ()),
        template=template,
        items=tuple(items or ()),
        files=tuple(files or ()),
        system=system,
        task=task,
        tier=tier,
        max_tokens=max_tokens,
        retry_failed=retry_failed,
        difficulty=difficulty,
        must_match=must_match,
        response_schema=response_schema,
    )
    return await _run(
        ctx, lambda state, session: batch_service.submit(state, session, args, progress=_progress(ctx)), spends=True
    )


async def batch_status(ctx: Ctx, batch_id: Text = None) -> CallToolResult:
    """Progress and cost of one batch, or of all open ones."""

    return await _run(ctx, lambda state, session: batch_service.status(state, session, batch_id))


async def batch_results(
    batch_id: str,
    ctx: Ctx,
    offset: Annotated[int, Field(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Field(ge=1, le=500)] = 20,
    write_to: Annotated[Text, Field(description="Write all results here (.jsonl or .md); returns a digest.")] = None,
) -> CallToolResult:
    """A page of a finished batch's results, or all of them written to a file."""

    return await _run(
        ctx, lambda state, session: batch_service.results(state, session, batch_id, offset, limit, write_to)
    )


async def summarize_context(
    ctx: Ctx,
    text: Text = None,
    paths: Annotated[list[str] | None, Field(description="Paths/globs the server reads.")] = None,
    focus: Annotated[Text, Field(description="What the summary is for.")] = None,
    target_tokens: Annotated[int, Field(ge=50, le=8000)] = 600,
    keep: Annotated[list[str] | None, Field(description="Strings that must survive verbatim.")] = None,
) -> CallToolResult:
    """Summarize bulky text or files on the cheap tier; paths, errors, numbers and `keep` survive."""

    args = SummarizeArgs(
        text=text, paths=tuple(paths or ()), focus=focus, target_tokens=target_tokens, keep=tuple(keep or ())
    )
    return await _run(
        ctx,
        lambda state, session: summarize.summarize_context(state, session, args, progress=_progress(ctx)),
        spends=True,
    )


async def trim_result(
    ctx: Ctx,
    content: Text = None,
    path: Text = None,
    handle: Annotated[Text, Field(description="From an earlier trim: reslice without resending.")] = None,
    fields: Annotated[
        str | list[str] | None, Field(description="JMESPath, dotted paths, or CSV columns to keep.")
    ] = None,
    query: Annotated[Text, Field(description="Keep only what answers this.")] = None,
    max_tokens: Annotated[int, Field(ge=50, le=20000)] = 800,
) -> CallToolResult:
    """Shrink JSON, logs, tables or text to what matters, locally and free; keeps a handle."""

    args = TrimArgs(content=content, path=path, handle=handle, fields=fields, query=query, max_tokens=max_tokens)
    return await _run(ctx, lambda state, session: trim_tool.trim_result(state, session, args), spends=True)


async def budget_status(ctx: Ctx, scope: Literal["session", "day", "month", "all"] = "all") -> CallToolResult:
    """Spend, budget left, savings vs the baseline model, cache hits, pending batches."""

    return await _run(ctx, lambda state, session: status.budget_status(state, session, scope))


_TOOLS: list[tuple[Callable[..., Any], ToolAnnotations]] = [
    (routed_complete, _CALLS_CLAUDE),
    (batch_submit, _CALLS_CLAUDE),
    (batch_status, _READ_ONLY),
    (batch_results, _LOCAL_WRITE),
    (summarize_context, _CALLS_CLAUDE),
    (trim_result, _LOCAL_WRITE),
    (budget_status, _READ_ONLY),
]


def compact_schema(node: Any) -> Any:
    """Drop what a model doesn't need from a pydantic JSON schema: titles, and `null` options."""
    if isinstance(node, list):
        return [compact_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and value is None:
            continue
        if key == "additionalProperties" and value is True:
            continue
        out[key] = compact_schema(value)
    any_of = out.get("anyOf")
    if isinstance(any_of, list):
        options = [o for o in any_of if o != {"type": "null"}]
        if len(options) == 1 and isinstance(options[0], dict):
            del out["anyOf"]
            out = {**options[0], **out}
        else:
            out["anyOf"] = options
    return out


class _OffloadTool(Tool):
    """A tool whose argument errors read as instructions, not as a pydantic dump."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        known = set(self.parameters.get("properties", {}))
        unknown = sorted(set(arguments) - known)
        if unknown:
            # Ignoring them would let a model believe e.g. `files=` was read when it wasn't.
            raise ToolError(
                f"{self.name}: unknown argument(s) {', '.join(unknown)}; this tool takes {', '.join(sorted(known))}"
            )
        try:
            return await super().run(arguments, context, convert_result)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(argument_errors(self.name, cause)) from None
            if isinstance(cause, ToolError) and not isinstance(exc, UnexpectedToolError):
                # Our own message is complete; the SDK's "Error executing tool X: " prefix is noise.
                raise ToolError(str(cause)) from None
            raise


def argument_errors(tool: str, exc: ValidationError) -> str:
    """`tool: field: what was wrong (got …)` for each bad argument, without pydantic's boilerplate."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        got = "" if err["type"] == "missing" else f" (got {bounded(repr(err.get('input')), 60)})"
        parts.append(f"{where}: {err['msg']}{got}")
    return f"{tool}: fix these arguments and call again: " + "; ".join(parts)


def build_tools() -> list[Tool]:
    tools: list[Tool] = []
    for fn, hints in _TOOLS:
        tool = _OffloadTool.from_function(fn, annotations=hints, structured_output=False)
        tool.parameters = compact_schema(tool.parameters)
        tools.append(tool)
    return tools
