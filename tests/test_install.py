"""A plain `pip install .` (no test extra) into a clean venv gives a working `offload demo` and
`offload emulator`: the product never imports pytest or anything else only the tests install."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_plain_install_runs_demo_and_emulator(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, str(ROOT)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    offload = str(venv / "bin" / "offload")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

    no_pytest = subprocess.run([str(venv / "bin" / "python"), "-c", "import pytest"], capture_output=True, timeout=60)
    assert no_pytest.returncode != 0  # the test extra really is absent

    demo = subprocess.run([offload, "demo"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
    for tool in ("routed_complete", "batch_submit", "summarize_context", "trim_result", "budget_status"):
        assert tool in demo.stdout

    port = _free_port()
    emu = subprocess.Popen(
        [offload, "emulator", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer test-key"}
                )
                with urllib.request.urlopen(req, timeout=5) as resp:
                    models = json.load(resp)
                break
            except OSError:
                assert emu.poll() is None, emu.communicate()[1][-2000:]  # it exited: show why
                assert time.monotonic() < deadline, "emulator did not answer within 60 s"
                time.sleep(0.2)
        assert any(m["id"] == "claude-haiku-5-5" for m in models["data"])
    finally:
        emu.terminate()
        emu.communicate(timeout=30)
