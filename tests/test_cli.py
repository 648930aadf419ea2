"""The `offload` console script as a user runs it: real subprocesses."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import anthropic

from offload import __version__

OFFLOAD = shutil.which("offload") or str(Path(sys.executable).with_name("offload"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_offload_emulator_serves_the_stock_sdk_on_the_given_port() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [OFFLOAD, "emulator", "--port", str(port), "--seed", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="k", max_retries=0)
        deadline = time.monotonic() + 20
        while True:
            try:
                count = client.messages.count_tokens(
                    model="claude-haiku-5-5", messages=[{"role": "user", "content": "hello there"}]
                )
                break
            except anthropic.APIConnectionError:
                assert time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.1)
        message = client.messages.create(
            model="claude-haiku-5-5", max_tokens=50, messages=[{"role": "user", "content": "hello there"}]
        )
        assert message.usage.input_tokens == count.input_tokens
        client.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_demo_runs_every_step_without_a_key() -> None:
    env = {"PATH": str(Path(OFFLOAD).parent), "HOME": "/nonexistent"}
    done = subprocess.run([OFFLOAD, "demo"], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for step in ("routed_complete", "trim_result", "summarize_context", "batch_submit", "budget_status"):
        assert step in out
    assert "haiku-5-5 escalated → sonnet-5-5 ok" in out
    assert "cache read" in out and "ERROR" not in out
    assert "every step ran" in out


def test_version_flag_prints_the_package_version() -> None:
    done = subprocess.run([OFFLOAD, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout == f"offload {__version__}\n"
