"""A beat in a thread while a block runs: what keeps jobs marked alive between progress
writes (a job's heartbeat, a batch's one UPDATE for all its trials)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def beating(beat: Callable[[], object], every: float, what: str) -> Iterator[None]:
    """Call ``beat`` every ``every`` seconds until the block ends; a beat that fails is
    logged (the next may get through), one that returns False ends the beats (the job is
    no longer ours: nothing to keep up)."""
    done = threading.Event()

    def run() -> None:
        while not done.wait(every):
            try:
                if beat() is False:
                    return
            except Exception as e:  # noqa: BLE001 - the next beat may get through
                log.warning("heartbeat of %s failed: %s", what, e)

    t = threading.Thread(target=run, daemon=True, name="fitserve-heartbeat")
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(every + 5)
