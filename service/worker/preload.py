"""What the embedded pool's fork server imports once (service/worker/local.py): torch and
the worker's own modules. Each worker is then a fork of that process and starts in some 20
ms, not after 2 s of imports; a worker that replaces a dead one too.

Only imports: nothing here may start a thread (a fork copies none of them, and a lock one
held would stay locked in every child) or initialise CUDA or OpenMP (neither survives a
fork). ``tests/unit/worker/test_fork_server.py`` holds it to that."""

from __future__ import annotations

import gc
import signal

# The imports make only objects that live as long as the process, some 325 000 of them:
# without collections while they run (0.25 s of their 1.8 s of CPU went to collections
# that found nothing), then frozen out of the collector's generations. The workers fork
# with the heap frozen: their own collections never walk torch's objects, and so never
# write to (and copy) the pages they share with the fork server.
gc.disable()

import torch  # noqa: E402, F401  (the point of the module: imported once, before the forks)

import service.store.artifacts  # noqa: E402
import service.store.metadata  # noqa: E402
import service.worker.batches  # noqa: E402
import service.worker.runner  # noqa: E402, F401
from service.store.upkeep import die_with_parent  # noqa: E402

gc.freeze()
gc.enable()

# The fork server dies with the server at once (a kill -9 too), and its workers with it
# (each asks to die with the fork server, its parent). Without this it would end only once
# it read the end of its pipe from the server and Python had wound down, some 0.1 to 0.5
# s in which a worker could finish a job the next server recovers and runs again.
die_with_parent()

# The fork server ignores SIGTERM: a SIGTERM to the server's process group (a terminal, an
# init system, ``docker stop``) must stop the server, which stops its workers itself; the
# fork server ends when the server does (its end of a pipe closes). Each worker sets the
# default back (``worker_main``).
signal.signal(signal.SIGTERM, signal.SIG_IGN)
