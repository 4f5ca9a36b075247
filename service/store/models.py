"""Model records: fitted models, their names and versions."""

from __future__ import annotations

from sqlalchemy import delete, select

from service.errors import NotFound, not_found
from service.store.session import Page, Records
from service.store.tables import ModelRow


class ModelRecords(Records):

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
        its ``model_id``, which then answers 404.

        The DELETE comes first in its transaction, as ``delete_dataset``'s does, so that a
        check made after it (an alias or a traffic split pointing at the model: a 409, once
        those exist) sees every reference committed before it and rolls it back."""
        with self.session() as s:
            row = s.scalars(
                delete(ModelRow)
                .where(ModelRow.id == model_id, ModelRow.tenant == tenant)
                .returning(ModelRow)
            ).one_or_none()
        if row is None:
            raise not_found("model", model_id)
        return row
