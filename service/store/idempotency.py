"""``Idempotency-Key``: a retried POST gets the resource the first one created.

The key is reserved before the work starts, so two concurrent requests with one key cannot
both create; the same key with another body is a 409, as is a retry while the first runs.
The work records what it created against the key in the transaction that creates it
(``Attempt.completion``), so a request cut off after its commit is found by its retry. A
reservation whose request never finished (the server died) is free again after
``reservation_s``: a retry then does the work; the embedded server frees them all at its
start (``release_unfinished``).
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from service.errors import Conflict, InvalidInput
from service.store.keys import IdempotencyRepository, Reservation
from service.store.metadata import MetadataStore
from service.store.tables import utcnow

Completion = Callable[[Session, str], None]
"""Records the created resource's id against the key, in the session that creates it."""


@dataclass
class Replay:
    resource_id: str
    status_code: int


class Attempt:
    def __init__(self, reservation: Reservation | None = None) -> None:
        self.reservation = reservation
        self.resource_id: str | None = None
        self.status_code: int | None = None
        self.recorded = False

    def created(self, resource_id: str, status_code: int) -> None:
        """The work created this (committed on its own): recorded against the key after."""
        self.resource_id, self.status_code = resource_id, status_code

    def completion(self, status_code: int) -> Completion | None:
        """A callback for the store to run in the transaction that creates the resource, so
        the resource and its key's record commit together (None without a key)."""
        reservation = self.reservation
        if reservation is None:
            return None

        def complete(s: Session, resource_id: str) -> None:
            reservation.complete_in(s, resource_id, status_code)
            self.resource_id, self.status_code = resource_id, status_code
            self.recorded = True  # if the commit then fails, the exception releases the key

        return complete


_swept: weakref.WeakKeyDictionary[MetadataStore, float] = weakref.WeakKeyDictionary()
_sweep_lock = threading.Lock()


def _sweep_expired(repo: IdempotencyRepository, reservation_s: float) -> None:
    """Free every expired reservation, at most once per ``reservation_s`` per store (a retry
    takes its own key over in ``reserve``; this frees the keys nobody retries)."""
    now = time.monotonic()
    with _sweep_lock:
        last = _swept.get(repo.meta)
        if last is not None and now - last < reservation_s:
            return
        _swept[repo.meta] = now
    repo.release_stale_reservations(utcnow() - timedelta(seconds=reservation_s))


def release_unfinished(meta: MetadataStore) -> int:
    """At the start of the only server on its store (the embedded mode): every reservation
    left is of a request that died with the last server; free them all."""
    return IdempotencyRepository(meta).release_stale_reservations(None)


@contextmanager
def idempotent(
    meta: MetadataStore, tenant: str, route: str, key: str | None, body: bytes, *,
    reservation_s: float,
) -> Iterator[Replay | Attempt]:
    """Yields a Replay (answer with that resource) or an Attempt (do the work; then call
    ``created``, or have the store run ``completion()`` in the creating transaction).
    Without a key it always yields an Attempt. ``reservation_s``: how long an unfinished
    request holds its key."""
    if key is None:
        yield Attempt()
        return
    if not key or len(key) > 200 or not key.isprintable():
        raise InvalidInput("Idempotency-Key must be 1 to 200 printable characters",
                           field="Idempotency-Key")
    repo = IdempotencyRepository(meta)
    _sweep_expired(repo, reservation_s)
    digest = hashlib.sha256(body).hexdigest()
    held = repo.reserve(tenant, route, key, digest,
                        stale_before=utcnow() - timedelta(seconds=reservation_s))
    if not isinstance(held, Reservation):
        if held.request_sha256 != digest:
            raise Conflict("this Idempotency-Key was used with a different body; use a new "
                           "key for a new request", field="Idempotency-Key")
        if held.resource_id is None or held.status_code is None:
            raise Conflict("a request with this Idempotency-Key is still being processed; "
                           "retry shortly", field="Idempotency-Key",
                           headers={"Retry-After": str(max(1, round(reservation_s)))})
        yield Replay(held.resource_id, held.status_code)
        return
    attempt = Attempt(held)
    try:
        yield attempt
    except BaseException:
        repo.release(held)  # it failed: a corrected retry may reuse the key
        raise
    if attempt.recorded:
        return
    if attempt.resource_id is None or attempt.status_code is None:
        repo.release(held)
    else:
        repo.complete(held, attempt.resource_id, attempt.status_code)
