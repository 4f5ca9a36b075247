"""Dataset records: stored once per tenant and content (sha256)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import Conflict, not_found
from service.jobs.status import ACTIVE
from service.store.session import Page, Records
from service.store.tables import DatasetRow, JobRow, new_id, utcnow


class DatasetRecords(Records):

    def add_dataset(
        self, then: Callable[[Session, str, bool], None] | None = None, **values: Any
    ) -> tuple[DatasetRow, bool]:
        """Store a dataset record; the same content twice gives the first record back.
        ``then(session, dataset_id, created)``: what else must commit with the answer (the
        Idempotency-Key's completion), in the same transaction."""
        tenant = values.get("tenant", "default")

        def same_content(s: Session) -> DatasetRow | None:
            found = s.scalar(select(DatasetRow).where(
                DatasetRow.tenant == tenant, DatasetRow.sha256 == values["sha256"]))
            if found is not None and then is not None:
                then(s, found.id, False)
            return found

        with self.session() as s:
            found = same_content(s)
        if found is not None:
            return found, False
        row = DatasetRow(id=new_id("ds"), created_at=utcnow(), **values)
        try:
            with self.session() as s:
                s.add(row)
                if then is not None:
                    s.flush()
                    then(s, row.id, True)
        except IntegrityError:  # the same content arrived concurrently
            with self.session() as s:
                found = same_content(s)
            if found is None:
                raise
            return found, False
        return row, True

    def get_dataset(self, dataset_id: str, tenant: str = "default") -> DatasetRow:
        with self.session() as s:
            row = s.get(DatasetRow, dataset_id)
        if row is None or row.tenant != tenant:
            raise not_found("dataset", dataset_id)
        return row

    def list_datasets(self, tenant: str, limit: int, cursor: str | None) -> Page:
        return self._page(DatasetRow, [DatasetRow.tenant == tenant], limit, cursor)

    def delete_dataset(self, dataset_id: str, tenant: str = "default") -> DatasetRow:
        """Delete the record; returns it. 409 while a queued or running job uses it.

        The DELETE comes first and the count of active jobs after it, in one transaction:
        on SQLite the DELETE takes the write lock, so no job insert commits between them; on
        PostgreSQL it takes the row's lock, which waits for submits holding it FOR KEY SHARE
        (``create_job``), and the count, a later statement, sees the jobs they committed."""
        with self.session() as s:
            row = s.scalars(
                delete(DatasetRow)
                .where(DatasetRow.id == dataset_id, DatasetRow.tenant == tenant)
                .returning(DatasetRow)
            ).one_or_none()
            if row is None:
                raise not_found("dataset", dataset_id)
            busy = s.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.dataset_id == dataset_id, JobRow.status.in_(ACTIVE))
            )
            if busy:  # rolls the DELETE back
                raise Conflict(
                    f"dataset {dataset_id!r} is used by {busy} queued or running job(s); "
                    "cancel them or wait for them to finish"
                )
        return row

    def sha_in_use(self, sha256: str) -> bool:
        with self.session() as s:
            return bool(
                s.scalar(select(func.count()).select_from(DatasetRow).where(
                    DatasetRow.sha256 == sha256))
            )
