"""Process liveness through psutil, the one place offload asks."""

from __future__ import annotations

import os
import subprocess
import sys

from offload.infra.processes import pid_alive


def test_a_running_process_is_alive_and_a_reaped_one_is_not() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert not pid_alive(child.pid)  # reaped: no such process


def test_another_users_process_counts_as_alive() -> None:
    assert pid_alive(1)  # init/launchd: exists, whoever owns it


def test_pid_zero_is_never_judged_dead() -> None:
    # Detached batch holds use pid 0; they expire by time, not by liveness.
    assert pid_alive(0)
