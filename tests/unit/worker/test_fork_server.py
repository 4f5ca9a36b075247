"""The embedded pool's workers are forks of a fork server that imported torch once
(service/worker/preload.py; ``worker_context`` in service/worker/forkserver.py); a worker
knows which process it dies with (``started_by``); ``fitserve serve`` starts the fork server
before it imports the app. The crash suite (tests/faults) kills servers and workers around
them."""

from __future__ import annotations

import os
import subprocess
import sys

from service.worker.local import started_by


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_the_preload_imports_torch_and_starts_no_thread_nor_cuda():
    # a fork copies no thread (a lock one held stays locked in every child), and CUDA does
    # not survive a fork: the fork server must hold neither
    out = _run("import threading, sys; import service.worker.preload; import torch; "
               "print(threading.active_count(), 'torch' in sys.modules, "
               "torch.cuda.is_initialized())")
    assert out == "1 True False"


def test_the_preload_leaves_its_imports_frozen_and_the_collector_on():
    # the workers fork with torch's objects out of the collector's generations (their
    # collections never walk them, nor copy the pages they share), and collect their own
    out = _run("import gc; import service.worker.preload; "
               "print(gc.get_freeze_count() > 200_000, gc.isenabled())")
    assert out == "True True"


def test_a_worker_watches_the_server_or_the_fork_server_the_server_started():
    me = os.getpid()
    # a child of this process: it watches this process
    assert _run(f"from service.worker.local import started_by; print(started_by({me}))") \
        == str(me)
    # a grandchild (through a shell that stays, as the fork server does): it watches the shell
    code = f"from service.worker.local import started_by; import os; " \
           f"print(started_by({me}) == os.getppid() != {me})"
    out = subprocess.run(["bash", "-c", f'"{sys.executable}" -c "{code}"; true'],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
    # neither: the server it was started for is gone (here: a process that has ended)
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert started_by(gone.pid) is None
    assert _run("from service.worker.local import started_by; print(started_by(1))") == "None"


def test_serve_starts_the_fork_server_before_it_imports_the_app():
    # in a process of its own: the start is real (a fork server that imports torch), and
    # the check is that neither torch nor the app was imported here when it was asked for
    code = """
import sys, types
from multiprocessing import forkserver
import service.cli.app as cli_app
import service.worker.forkserver as fs
seen = []
def start_early():
    seen.append(('fork server', 'torch' in sys.modules, 'fastapi' in sys.modules))
    forkserver.ensure_running()
fs.start_early = start_early
app = types.ModuleType('service.main')  # the app as _serve_app imports it, recorded
app.create_app = lambda settings: seen.append(('app',))
sys.modules['service.main'] = app
cli_app._serve_app(None, None, 2, False, 'all')
cli_app._serve_app(None, None, None, False, 'predict')
alive = forkserver._forkserver._forkserver_pid is not None
print(seen, alive)
"""
    env = {**os.environ, "FITSERVE_DATA_DIR": "/nonexistent-not-touched"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[('fork server', False, False), ('app',), ('app',)] True"
