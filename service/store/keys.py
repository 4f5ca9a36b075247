"""API keys and idempotency records in the metadata store."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from service.store.metadata import MetadataStore
from service.store.session import updated_rows
from service.store.tables import ApiKeyRow, IdempotencyRow, new_id, utcnow


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


class IdempotencyRepository:
    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def reserve(self, tenant: str, route: str, key: str, request_sha256: str
                ) -> IdempotencyRow | None:
        """Claim the key for this request; returns the earlier record if there is one."""
        for _ in range(5):
            try:
                with self.meta.session() as s:
                    s.add(IdempotencyRow(tenant=tenant, route=route, key=key,
                                         request_sha256=request_sha256, created_at=utcnow()))
                return None
            except IntegrityError:
                with self.meta.session() as s:
                    row = s.scalar(select(IdempotencyRow).where(
                        IdempotencyRow.tenant == tenant, IdempotencyRow.route == route,
                        IdempotencyRow.key == key))
                if row is not None:
                    return row
                # the holder failed and let the key go between our insert and our read
        raise RuntimeError(f"could not reserve idempotency key {key!r}")

    def complete(self, tenant: str, route: str, key: str, resource_id: str,
                 status_code: int) -> None:
        with self.meta.session() as s:
            s.execute(update(IdempotencyRow).where(
                IdempotencyRow.tenant == tenant, IdempotencyRow.route == route,
                IdempotencyRow.key == key).values(resource_id=resource_id,
                                                  status_code=status_code))

    def release(self, tenant: str, route: str, key: str) -> None:
        """The request failed: the key may be used again."""
        with self.meta.session() as s:
            s.execute(delete(IdempotencyRow).where(
                IdempotencyRow.tenant == tenant, IdempotencyRow.route == route,
                IdempotencyRow.key == key, IdempotencyRow.resource_id.is_(None)))
