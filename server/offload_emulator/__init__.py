"""Local, deterministic Claude API (Messages, count_tokens, Batches, Models).

with serve_in_thread(EmulatorConfig(seed=1, batch_delay_s=0.2)) as emu:
    client = anthropic.Anthropic(base_url=emu.url, api_key="test-key")
    emu.state.clock.advance(3600)      # expire 5m/1h cache entries
    emu.state.faults.force(429)        # next request gets a 429
    emu.state.calls("/v1/messages")    # what the server received
"""

from .clock import Clock
from .config import EmulatorConfig
from .errors import ApiError
from .faults import FaultSpec, FaultSpecError
from .replies import Script, ScriptError
from .server import EmulatorHandle, serve_forever, serve_in_thread
from .state import EmulatorState, RequestRecord

__all__ = [
    "ApiError",
    "Clock",
    "EmulatorConfig",
    "EmulatorHandle",
    "EmulatorState",
    "FaultSpec",
    "FaultSpecError",
    "RequestRecord",
    "Script",
    "ScriptError",
    "serve_forever",
    "serve_in_thread",
]
