"""The `offload emulator` entry point: argument checks and a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import pytest

from offload_emulator.cli import main


def test_bad_script_or_faults_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("- reply: 3\n")
    assert main(["--script", str(bad)]) == 2
    assert "s.yaml: rule 0: 'reply' must be a string" in capsys.readouterr().err
    assert main(["--faults", "999=0.1"]) == 2
    capsys.readouterr()
    assert main(["--batch-cache-hit-rate", "1.5"]) == 2
    assert "batch_cache_hit_rate must be within [0, 1], got 1.5" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_module_runs_a_server(tmp_path: Path) -> None:
    port = _free_port()
    script = tmp_path / "s.yaml"
    script.write_text("- reply: scripted\n")
    src = str(Path(__file__).resolve().parents[2] / "server")
    env = os.environ | {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [
        sys.executable,
        "-m",
        "offload_emulator",
        "--port",
        str(port),
        "--seed",
        "3",
        "--script",
        str(script),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="k", max_retries=0) as c:
            deadline = time.monotonic() + 10
            while True:
                try:
                    msg = c.messages.create(
                        model="claude-haiku-5-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
                    )
                    break
                except anthropic.APIConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
        assert msg.content[0].text == "scripted"  # type: ignore[union-attr]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert b"offload emulator: http://127.0.0.1" in err


def test_a_busy_port_is_one_line_and_exit_2_before_any_banner(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"offload emulator: cannot listen on 127.0.0.1:{port} (")
    assert "http://" not in err[0]  # no banner for a server that never started
