"""Evaluation records: a model scored on a dataset. They belong to the model's aggregate
(deleting a model deletes its evaluations, in the same transaction), so ``ModelRecords``
extends these."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from service.errors import not_found
from service.store.session import Page, Records
from service.store.tables import EvaluationRow, ModelRow, new_id, utcnow


class EvaluationRecords(Records):

    def add_evaluation(self, **values: Any) -> EvaluationRow:
        """Record an evaluation of a model that still exists (404 if it was deleted while
        it was being scored: nothing is stored then)."""
        with self.write_session() as s:
            model = s.get(ModelRow, values["model_id"], with_for_update=True)
            if model is None or model.tenant != values["tenant"]:
                raise not_found("model", values["model_id"])
            row = EvaluationRow(id=new_id("evl"), created_at=utcnow(), **values)
            s.add(row)
        return row

    def get_evaluation(self, evaluation_id: str, tenant: str = "default") -> EvaluationRow:
        with self.session() as s:
            row = s.get(EvaluationRow, evaluation_id)
        if row is None or row.tenant != tenant:
            raise not_found("evaluation", evaluation_id)
        return row

    def list_evaluations(self, model_id: str, tenant: str, limit: int,
                         cursor: str | None) -> Page:
        """A model's evaluations, newest first (the model must exist: 404 otherwise)."""
        self.get_model(model_id, tenant)
        return self._page(EvaluationRow, [EvaluationRow.tenant == tenant,
                                          EvaluationRow.model_id == model_id], limit, cursor)

    @staticmethod
    def _delete_evaluations_of(s: Session, model_id: str) -> None:
        s.execute(delete(EvaluationRow).where(EvaluationRow.model_id == model_id))

    def get_model(self, model_id: str, tenant: str = "default") -> ModelRow:
        raise NotImplementedError  # ModelRecords'
