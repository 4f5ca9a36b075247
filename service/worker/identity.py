"""Who holds a job: a worker's name is ``host:pid``, so a process on the same host can tell
whether the holder of a running job is still alive."""

from __future__ import annotations

import os
import socket


def worker_name(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
