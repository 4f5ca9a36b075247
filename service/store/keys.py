"""API keys and idempotency records in the metadata store."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import Conflict
from service.store.metadata import MetadataStore
from service.store.session import updated_rows
from service.store.tables import ApiKeyRow, IdempotencyRow, new_id, utcnow

log = logging.getLogger(__name__)


class KeyRepository:
    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def add(self, tenant: str, scope: str, key_sha256: str, prefix: str,
            name: str | None) -> ApiKeyRow:
        row = ApiKeyRow(id=new_id("key"), tenant=tenant, scope=scope, name=name,
                        key_sha256=key_sha256, prefix=prefix, created_at=utcnow())
        with self.meta.session() as s:
            s.add(row)
        return row

    def by_hash(self, key_sha256: str) -> ApiKeyRow | None:
        with self.meta.session() as s:
            return s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_sha256 == key_sha256))

    def all(self) -> list[ApiKeyRow]:
        with self.meta.session() as s:
            return list(s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)))

    def revoke(self, key_id: str) -> bool:
        with self.meta.session() as s:
            return updated_rows(
                s,
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=utcnow()),
            ) == 1


@dataclass(frozen=True)
class Reservation:
    """One request's hold on an Idempotency-Key: the row and the moment it was taken. A
    takeover of an expired hold moves ``created_at``, so the first holder, if it still runs,
    can no longer complete or release what is now another request's."""

    tenant: str
    route: str
    key: str
    row_id: int
    created_at: datetime

    def _is_mine(self) -> list[Any]:
        return [IdempotencyRow.id == self.row_id, IdempotencyRow.created_at == self.created_at,
                IdempotencyRow.resource_id.is_(None)]

    def complete_in(self, s: Session, resource_id: str, status_code: int) -> None:
        """Record what this request created, in the caller's transaction (the one that
        creates it): a committed resource is always found by a retry with its key. Raises
        Conflict, rolling that transaction back, when the hold expired and another request
        took the key over."""
        done = updated_rows(s, update(IdempotencyRow).where(*self._is_mine()).values(
            resource_id=resource_id, status_code=status_code))
        if done != 1:
            raise Conflict("this request outlived its Idempotency-Key reservation and another "
                           "request with the key took it over; retry to get its result",
                           field="Idempotency-Key")


class IdempotencyRepository:
    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def reserve(self, tenant: str, route: str, key: str, request_sha256: str,
                stale_before: datetime | None = None) -> Reservation | IdempotencyRow:
        """Claim the key for this request: a Reservation, or the earlier record when there
        is one. An unfinished reservation taken before ``stale_before`` belongs to a request
        that died (or hung) and is taken over."""
        for _ in range(5):
            now = utcnow()
            try:
                with self.meta.session() as s:
                    mine = IdempotencyRow(tenant=tenant, route=route, key=key,
                                          request_sha256=request_sha256, created_at=now)
                    s.add(mine)
                    s.flush()
                    row_id = mine.id
                return Reservation(tenant, route, key, row_id, now)
            except IntegrityError:
                with self.meta.session() as s:
                    row = s.scalar(select(IdempotencyRow).where(
                        IdempotencyRow.tenant == tenant, IdempotencyRow.route == route,
                        IdempotencyRow.key == key))
                if row is None:
                    continue  # the holder failed and let the key go between insert and read
                if (row.resource_id is not None or stale_before is None
                        or row.created_at >= stale_before):
                    return row
                # the holder never finished: take the key over, unless another retry just did
                with self.meta.session() as s:
                    taken = updated_rows(s, update(IdempotencyRow).where(
                        IdempotencyRow.id == row.id, IdempotencyRow.created_at == row.created_at,
                        IdempotencyRow.resource_id.is_(None)).values(
                            created_at=now, request_sha256=request_sha256))
                if taken == 1:
                    log.warning("Idempotency-Key %r (%s) was held since %s by a request that "
                                "never finished; taken over", key[:40], route, row.created_at)
                    return Reservation(tenant, route, key, row.id, now)
        raise RuntimeError(f"could not reserve idempotency key {key[:40]!r}")

    def complete(self, reservation: Reservation, resource_id: str, status_code: int) -> None:
        with self.meta.session() as s:
            reservation.complete_in(s, resource_id, status_code)

    def release(self, reservation: Reservation) -> None:
        """The request failed: the key may be used again (unless another took it over)."""
        with self.meta.session() as s:
            s.execute(delete(IdempotencyRow).where(*reservation._is_mine()))

    def release_stale_reservations(self, older_than: datetime | None) -> int:
        """Free the keys whose request never finished, those reserved before ``older_than``
        (all of them with None: at the start of the only server on its store, no request of
        an earlier life is still running). Returns how many were freed."""
        q = delete(IdempotencyRow).where(IdempotencyRow.resource_id.is_(None))
        if older_than is not None:
            q = q.where(IdempotencyRow.created_at < older_than)
        with self.meta.session() as s:
            freed = cast(CursorResult[Any], s.execute(q)).rowcount
        if freed:
            log.warning("freed %d Idempotency-Key reservation(s) whose request never "
                        "finished", freed)
        return freed
