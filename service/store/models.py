"""Model records: fitted models, their names and versions (and, with them, their
evaluations: store/evaluations.py; their names' aliases and traffic splits: store/names.py)."""

from __future__ import annotations

import random
import time
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import Conflict, InvalidInput, NotFound, clip, not_found
from service.jobs.status import ACTIVE
from service.store.evaluations import EvaluationRecords
from service.store.jobs import PREDICT
from service.store.names import NameRecords, next_version
from service.store.session import Page
from service.store.tables import JobRow, ModelRow, utcnow


class ModelRecords(EvaluationRecords, NameRecords):

    def get_model(self, model_id: str, tenant: str = "default") -> ModelRow:
        with self.session() as s:
            row = s.get(ModelRow, model_id)
        if row is None or row.tenant != tenant:
            raise not_found("model", model_id)
        return row

    def list_models(
        self, tenant: str, name: str | None, limit: int, cursor: str | None
    ) -> Page:
        filters = [ModelRow.tenant == tenant]
        if name:
            filters.append(ModelRow.name == name)
        return self._page(ModelRow, filters, limit, cursor)

    def find_model(self, ref: str | None, tenant: str = "default") -> ModelRow:
        """A model by id, by name (its latest version), or the latest of all when None."""
        with self.session() as s:
            if ref is not None and ref.startswith("mdl_"):
                row = s.get(ModelRow, ref)
                if row is not None and row.tenant == tenant:
                    return row
            q = select(ModelRow).where(ModelRow.tenant == tenant)
            if ref is not None:
                q = q.where(ModelRow.name == ref).order_by(ModelRow.version.desc())
            else:
                q = q.order_by(ModelRow.id.desc())
            row = s.scalars(q.limit(1)).first()
        if row is None:
            if ref is None:
                raise NotFound("no model has been trained yet")
            raise not_found("model", ref)
        return row

    def model_versions(self, name: str, tenant: str = "default") -> list[int]:
        """The version numbers of a model name, oldest first (empty for an unknown name)."""
        with self.session() as s:
            return [v for v in s.scalars(
                select(ModelRow.version)
                .where(ModelRow.tenant == tenant, ModelRow.name == name)
                .order_by(ModelRow.version)
            ) if v is not None]

    def find_model_version(self, name: str, version: int, tenant: str = "default") -> ModelRow:
        with self.session() as s:
            row = s.scalar(select(ModelRow).where(
                ModelRow.tenant == tenant, ModelRow.name == name, ModelRow.version == version))
        if row is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return row

    def delete_model(self, model_id: str, tenant: str = "default") -> ModelRow:
        """Delete a model's record, and with it its version of its name; returns it (the
        caller removes the checkpoint file after the commit). The job that trained it keeps
        its ``model_id``, which then answers 404. 409 while a queued or running job needs it,
        a batch prediction or a warm start (as a dataset's DELETE is refused while a job
        uses the dataset).

        The DELETE comes first in its transaction, as ``delete_dataset``'s does, so that a
        check made after it (an alias or a traffic split pointing at the model, a job queued
        that needs it: a 409) sees every reference committed before it and rolls it back;
        the submit of such a job checks the model in the transaction that queues it
        (``create_job``'s ``check_model``)."""
        with self.session() as s:
            row = s.scalars(
                delete(ModelRow)
                .where(ModelRow.id == model_id, ModelRow.tenant == tenant)
                .returning(ModelRow)
            ).one_or_none()
            if row is not None:
                self._refuse_named_version(s, row)
                self._refuse_in_use(s, row)
                self._delete_evaluations_of(s, row.id)
        if row is None:
            raise not_found("model", model_id)
        return row

    @staticmethod
    def _refuse_in_use(s: Session, row: ModelRow) -> None:
        """409 while a queued or running job needs the model: a batch prediction scoring
        with it, or a warm start (``init_from``) beginning from it."""
        busy = s.scalar(select(func.count()).select_from(JobRow).where(
            JobRow.status.in_(ACTIVE), JobRow.tenant == row.tenant,
            or_(and_(JobRow.task == PREDICT, JobRow.spec["model_id"].as_string() == row.id),
                JobRow.spec[("init_from", "model")].as_string() == row.id)))
        if busy:  # rolls the DELETE back
            raise Conflict(f"model {row.id!r} is needed by {busy} queued or running job(s) (a "
                           "batch prediction with it, or a warm start from it); cancel them or "
                           "wait for them to finish")

    def resolve_model(self, ref: str, tenant: str = "default", field: str = "model") -> ModelRow:
        """A model by id, by name (its latest version), or ``name@N`` (version N),
        ``name@latest`` or ``name@alias``: 404 naming ``field`` for an unknown one."""
        name, at, target = ref.partition("@")
        if not at:
            return self.find_model(ref, tenant)
        if not name or not target:
            raise InvalidInput(f"{clip(ref, 80)!r}: give a name before '@' and a version "
                               f"number or alias after it (seed@3, seed@champion)", field=field)
        return self.resolve_name(name, target, tenant, field)

    def add_model(self, model_id: str, **values: Any) -> ModelRow:
        """Record a model that no job trained here (an imported checkpoint), as the next
        version of its name; the checkpoint is written before, and removed by the caller if
        this fails."""
        for attempt in range(10):
            try:
                with self.session() as s:
                    name = values.get("name")
                    version = next_version(s, values["tenant"], name) if name else None
                    row = ModelRow(id=model_id, version=version, created_at=utcnow(),
                                   **values)
                    s.add(row)
                return row
            except IntegrityError:  # two versions of one name at once: take the next number
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise RuntimeError(f"could not allocate a version of model name {values.get('name')!r}")

