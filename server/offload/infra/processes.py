"""Is a process on this machine still running? One answer for every platform.

`os.kill(pid, 0)` is the POSIX idiom, but on Windows it sends a console control event instead of
testing; psutil asks each OS its own way (and treats "exists but not ours" as alive).
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import psutil


def pid_alive(pid: int) -> bool:
    """True while a process with this id exists on this machine; ids <= 0 are never judged dead."""
    if pid <= 0:
        return True
    return bool(psutil.pid_exists(pid))


def host_id() -> str:
    """Which machine (and pid namespace) this process runs in: pids compare only within one.

    The host name alone is not enough: two containers may share it while numbering pids apart,
    and a pid recorded before a reboot means nothing after it. Linux adds its boot id and pid
    namespace; elsewhere the host name stands alone.
    """
    # Asked on every reserve: read /proc once per process (a fork keeps the machine, not the pid).
    return _host_id(os.getpid())


@functools.lru_cache(maxsize=4)
def _host_id(_pid: int) -> str:
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()[:8])
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)
