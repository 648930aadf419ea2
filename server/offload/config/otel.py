"""Whether to export metrics over OTLP (`OFFLOAD_OTEL=1`; needs the `otel` extra).

Where they go is the OpenTelemetry SDK's own business: it reads the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_METRIC_EXPORT_INTERVAL`...
the same variables Claude Code's telemetry uses, so both can point at one collector.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def otel_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return (env.get("OFFLOAD_OTEL") or "").strip().lower() in {"1", "true", "yes", "otlp"}
