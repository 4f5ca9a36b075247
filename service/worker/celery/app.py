"""The Celery app of the scale-out mode: one task, ``fitserve.run_job(job_id)``, one queue per
device kind, and the settings that make long jobs safe on Redis.

- ``acks_late`` + ``reject_on_worker_lost``: a message is acknowledged when its job is done;
  if the process running it dies, the message goes back to the queue.
- prefetch of one: a busy worker holds no messages that an idle one could run.
- ``visibility_timeout`` from the settings, longer than the longest job: Redis hands an
  unacknowledged message out again only after it.

None of this is what guarantees "never lost, never twice to completion": the job row is
(``MetadataStore.claim``, the reaper). The broker only carries wake-up calls.
"""

from __future__ import annotations

import logging

from celery import Celery
from kombu import Queue

from service.config import Settings
from service.worker.celery.broker import DEVICE_KINDS, device_kind

log = logging.getLogger(__name__)

TASK_NAME = "fitserve.run_job"


def make_celery(settings: Settings) -> Celery:
    app = Celery("fitserve", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(kind, routing_key=kind) for kind in DEVICE_KINDS],
        task_default_queue="cpu",
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "global_keyprefix": f"{settings.broker_prefix}:",
        },
        broker_connection_retry_on_startup=True,
        # a broker blip must not kill hours of training: the job row, not the message, says
        # who holds the job, and a redelivery of a running job is dropped
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # a child imports torch and warms it up before it takes work (Celery's default: 4 s)
        worker_proc_alive_timeout=120.0,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_pool_limit=4,
    )

    # the task itself is registered by the worker (tasks.run_worker); a publisher sends it
    # by name and needs no body
    return app


def publish(app: Celery, job_id: str, device: str) -> None:
    """Put a job on its device's queue; fails fast (about a second) when the broker is away."""
    kind = device_kind(device)
    app.send_task(
        TASK_NAME,
        args=[job_id],
        queue=kind,
        routing_key=kind,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                      "interval_max": 0.5},
    )


def queue_size(app: Celery, kind: str) -> int:
    """Messages waiting in a device kind's queue (not those a worker holds)."""
    with app.connection_for_read() as conn:
        # not passive: kombu's existence check for it ignores global_keyprefix on Redis and
        # says an existing queue is missing; declaring a queue Celery declares is a no-op
        declared = conn.default_channel.queue_declare(queue=kind, durable=True,
                                                      auto_delete=False)
        return int(declared.message_count)
