"""Is a process on this machine still running? One answer for every platform.

`os.kill(pid, 0)` is the POSIX idiom, but on Windows it sends a console control event instead of
testing; psutil asks each OS its own way (and treats "exists but not ours" as alive).
"""

from __future__ import annotations

import psutil


def pid_alive(pid: int) -> bool:
    """True while a process with this id exists on this machine; ids <= 0 are never judged dead."""
    if pid <= 0:
        return True
    return bool(psutil.pid_exists(pid))
