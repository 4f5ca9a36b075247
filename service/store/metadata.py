"""The metadata store: one object over the records of every aggregate (datasets, jobs,
models; keys and idempotency records are in keys.py), sharing one engine."""

from __future__ import annotations

from service.store.datasets import DatasetRecords
from service.store.jobs import JobRecords
from service.store.models import ModelRecords
from service.store.session import Page, make_engine

__all__ = ["MetadataStore", "Page", "make_engine"]


class MetadataStore(DatasetRecords, JobRecords, ModelRecords):
    """Datasets, jobs and models in SQL (SQLite by default, PostgreSQL in scale-out)."""
