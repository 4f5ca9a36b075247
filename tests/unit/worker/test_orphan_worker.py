"""A worker whose server died while it was still starting (before it could ask to die with
its parent) ends at once: it must not take jobs that the next server recovers too."""

from __future__ import annotations

import subprocess
import sys


def test_a_worker_started_for_a_dead_server_ends_without_working():
    # parent 1: not this process's parent; the worker must return before it reads anything
    # of its (here absent) settings, queues or stores
    code = ("from service.worker.local import worker_main; "
            "worker_main(None, None, None, None, None, parent=1); print('ended')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ended", out.stderr[-2000:]
