"""What the scale-out mode keeps on Redis beside Celery's own queues: which workers are alive
for each device kind, and the model catalog counter that API processes watch.

Every key starts with ``<broker_prefix>:`` (Celery's keys too), so deployments and test runs
can share one Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from service.training.devices import parse_device_name

log = logging.getLogger(__name__)

DEVICE_KINDS = ("cpu", "cuda", "mps")
"""One Celery queue per kind; ``cuda:1`` goes to ``cuda``."""


def device_kind(device: str) -> str:
    """The queue a job on ``device`` goes to."""
    return parse_device_name(device).split(":", 1)[0]


def redis_client(url: str) -> Any:
    import redis

    # short timeouts: a slow broker must not hold an API request for long
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


class WorkerRegistry:
    """Live workers per device kind: a sorted set of names scored by their last sign of
    life. Cheap to read (one ZCOUNT), and an entry that stops being refreshed fades out."""

    def __init__(self, client: Any, prefix: str, timeout_s: float) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout_s = timeout_s

    def _key(self, kind: str) -> str:
        return f"{self.prefix}:workers:{kind}"

    def beat(self, kind: str, name: str) -> None:
        now = time.time()
        with self.client.pipeline() as pipe:
            pipe.zadd(self._key(kind), {name: now})
            # entries of workers long gone would otherwise stay forever
            pipe.zremrangebyscore(self._key(kind), "-inf", now - 100 * self.timeout_s)
            pipe.execute()

    def leave(self, kind: str, name: str) -> None:
        self.client.zrem(self._key(kind), name)

    def live(self, kind: str) -> list[str]:
        since = time.time() - self.timeout_s
        return [n.decode() for n in self.client.zrangebyscore(self._key(kind), since, "+inf")]


class CatalogCounter:
    """A counter workers bump around every model commit (see serving/predictor.py); API processes
    read it in a background thread, so the predict path reads a plain int, never Redis."""

    POLL_S = 0.05

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}:catalog"
        self.value = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def bump(self) -> None:
        self.client.incr(self.key)

    def read(self) -> int:
        return int(self.client.get(self.key) or 0)

    def __call__(self) -> int:
        return self.value

    def start(self) -> None:
        try:
            self.value = self.read()
        except Exception as e:  # noqa: BLE001 - the poller keeps trying
            log.warning("catalog counter unreadable at start: %s", e)
        self._thread = threading.Thread(target=self._poll, daemon=True,
                                        name="fitserve-catalog")
        self._thread.start()

    def _poll(self) -> None:
        failing = False
        while not self._stop.wait(self.POLL_S):
            try:
                self.value = self.read()
                failing = False
            except Exception as e:  # noqa: BLE001 - logged once per outage
                if not failing:
                    log.warning("catalog counter unreadable: %s", e)
                failing = True
                # names and "latest" may now point at older models: forget them each time
                self.value -= 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
