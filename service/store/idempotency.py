"""``Idempotency-Key``: a retried POST gets the resource the first one created.

The key is reserved before the work starts, so two concurrent requests with one key cannot
both create; the same key with another body is a 409, as is a retry while the first runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service.errors import Conflict, InvalidInput
from service.store.keys import IdempotencyRepository
from service.store.metadata import MetadataStore


@dataclass
class Replay:
    resource_id: str
    status_code: int


class Attempt:
    def __init__(self) -> None:
        self.resource_id: str | None = None
        self.status_code: int | None = None

    def created(self, resource_id: str, status_code: int) -> None:
        self.resource_id, self.status_code = resource_id, status_code


@contextmanager
def idempotent(
    meta: MetadataStore, tenant: str, route: str, key: str | None, body: bytes
) -> Iterator[Replay | Attempt]:
    """Yields a Replay (answer with that resource) or an Attempt (do the work, then call
    ``created``). Without a key it always yields an Attempt."""
    if key is None:
        yield Attempt()
        return
    if not key or len(key) > 200 or not key.isprintable():
        raise InvalidInput("Idempotency-Key must be 1 to 200 printable characters",
                           field="Idempotency-Key")
    repo = IdempotencyRepository(meta)
    digest = hashlib.sha256(body).hexdigest()
    earlier = repo.reserve(tenant, route, key, digest)
    if earlier is not None:
        if earlier.request_sha256 != digest:
            raise Conflict("this Idempotency-Key was used with a different body; use a new "
                           "key for a new request", field="Idempotency-Key")
        if earlier.resource_id is None or earlier.status_code is None:
            raise Conflict("a request with this Idempotency-Key is still being processed; "
                           "retry shortly", field="Idempotency-Key")
        yield Replay(earlier.resource_id, earlier.status_code)
        return
    attempt = Attempt()
    try:
        yield attempt
    except BaseException:
        repo.release(tenant, route, key)  # it failed: a corrected retry may reuse the key
        raise
    if attempt.resource_id is None or attempt.status_code is None:
        repo.release(tenant, route, key)
    else:
        repo.complete(tenant, route, key, attempt.resource_id, attempt.status_code)
