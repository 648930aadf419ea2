"""The SDK's OpenTelemetry spans of API calls: kept when a tracer provider is set up, skipped when
none is (then every span is built only to record nothing, 0.1-0.2 ms of a routed call).

Each case runs in a fresh interpreter: the global tracer provider can be set only once per process.
The SDK names a Messages call's span `anthropic.messages.create` (anthropic/_tracing.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from offload.infra.claude import tracing_installed
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


def _spans(url: str, when: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, url, when], capture_output=True, text=True, timeout=60)
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
