"""The SDK's OpenTelemetry spans of API calls: kept when a tracer provider is set up, skipped when
none is (then every span is built only to record nothing, 0.1-0.2 ms of a routed call).

Each case runs in a fresh interpreter: the global tracer provider can be set only once per process.
The SDK names a Messages call's span `anthropic.messages.create` (anthropic/_tracing.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from offload.config.settings import Settings
from offload.infra.claude import ClaudeClient, sdk_spans_wanted, tracing_installed
from offload_emulator.server import EmulatorHandle

# Installs an SDK tracer provider before (`before`) or after building offload's client, makes one
# real call to the emulator, and prints the names of the spans that reached the exporter.
SCRIPT = textwrap.dedent(
    """
    import json, sys, anyio
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from offload.config.settings import Settings, shipped
    from offload.infra.claude import ClaudeClient
    from pathlib import Path

    url, when = sys.argv[1], sys.argv[2]
    exporter = InMemorySpanExporter()
    def install():
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

    async def main():
        if when == "before":
            install()
        settings = Settings(policy_path=shipped("default.yaml"), db_path=Path("unused.db"), session_id="s",
                            roots=(Path("."),), api_key="k", base_url=url)
        client = ClaudeClient.from_settings(settings)
        if when == "after":
            install()
        try:
            done = await client.create({"model": "claude-haiku-5-5", "max_tokens": 20,
                                        "messages": [{"role": "user", "content": "hi"}]})
        finally:
            await client.close()
        print(json.dumps({"spans": [s.name for s in exporter.get_finished_spans()], "text": done.text}))

    anyio.run(main)
    """
)


def _spans(url: str, when: str, env: dict[str, str] | None = None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, url, when], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["text"]  # the call really went through
    return list(got["spans"])


def test_only_a_real_provider_counts() -> None:
    assert tracing_installed(TracerProvider())
    assert not tracing_installed(trace.ProxyTracerProvider())
    assert not tracing_installed(trace.NoOpTracerProvider())


def test_a_provider_set_up_first_gets_the_sdk_spans(emulator: EmulatorHandle) -> None:
    assert "anthropic.messages.create" in _spans(emulator.url, "before")


def test_without_a_provider_the_client_builds_no_spans(emulator: EmulatorHandle) -> None:
    # The choice made: a provider installed only after the client exists gets none of its spans.
    assert _spans(emulator.url, "after") == []


def test_anthropic_open_telemetry_settings_keep_the_sdk_spans(emulator: EmulatorHandle) -> None:
    # A user who configured the SDK's tracing gets it, even with the provider set up later.
    env = {**os.environ, "ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE": "content"}
    assert sdk_spans_wanted(env)
    assert "anthropic.messages.create" in _spans(emulator.url, "after", env)


def test_a_tracer_provider_that_does_not_load_is_no_crash(emulator: EmulatorHandle) -> None:
    # `offload doctor` is what a user runs when serve will not start: building the client must not
    # raise on an OTEL_PYTHON_TRACER_PROVIDER that names nothing installed (the SDK itself copes).
    env = {**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "no_such_provider"}
    assert _spans(emulator.url, "none", env) == []


HOST = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=True, trace_flags=TraceFlags(1)
)


@pytest.mark.anyio
async def test_without_sdk_spans_the_callers_trace_context_still_reaches_the_api(
    emulator: EmulatorHandle, make_settings: Callable[..., Settings]
) -> None:
    # The SDK's own propagation sent the caller's trace context (e.g. a host's traceparent from
    # an MCP request's _meta) with each request; with its spans off, offload sends it.
    client = ClaudeClient.from_settings(make_settings(emulator.url))
    params = {"model": "claude-haiku-5-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    try:
        await client.create(params)
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(HOST)))
        try:
            await client.create(params)
            await client.count_tokens(params)
        finally:
            context.detach(token)
    finally:
        await client.close()
    sent = [r.trace.get("traceparent") for r in emulator.state.calls() if r.method == "POST"]
    host = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert sent == [None, host, host]  # none outside a trace; the create and the count inside it


def test_a_propagator_that_does_not_load_costs_the_header_not_the_client(emulator: EmulatorHandle) -> None:
    # OTEL_PROPAGATORS=...,xray is set shell-wide on AWS hosts without the xray package: importing
    # opentelemetry.propagate raises then. offload (and `offload doctor`) must still run.
    env = {**os.environ, "OTEL_PROPAGATORS": "tracecontext,xray"}
    assert _spans(emulator.url, "none", env) == []


@pytest.mark.anyio
async def test_batch_calls_carry_the_callers_trace_context_too(
    emulator: EmulatorHandle, make_settings: Callable[..., Settings]
) -> None:
    client = ClaudeClient.from_settings(make_settings(emulator.url))
    message = {"role": "user", "content": "hi"}
    request: dict[str, Any] = {
        "custom_id": "a",
        "params": {"model": "claude-haiku-5-5", "max_tokens": 5, "messages": [message]},
    }
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(HOST)))
    try:
        batch = await client.batch_create([request])
        await client.batch_retrieve(batch.id)
    finally:
        context.detach(token)
        await client.close()
    sent = [(r.method, r.path.count("/"), r.trace.get("traceparent")) for r in emulator.state.calls()]
    host = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert sent == [("POST", 3, host), ("GET", 4, host)]
