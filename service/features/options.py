"""What a job asks of its feature pipeline (TrainingSpec's ``features``, ``impute``,
``missing_indicator``, ``categorical`` and ``schema``), as plain values: nothing here reads
pydantic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from service.store.tabular import ColumnKind

Impute = Literal["mean", "median", "none"]
DEFAULT_MAX_CATEGORIES = 1000
"""One-hot columns per categorical when neither the job nor FITSERVE_MAX_CATEGORIES says."""


@dataclass(frozen=True)
class FeatureOptions:
    features: tuple[str, ...] | None = None  # which columns; None: every feature column
    impute: Impute = "mean"
    missing_indicator: bool = True  # a "<name>_missing" column for columns with blanks
    min_frequency: int = 1  # a level seen on fewer training rows goes to "<name>=other"
    max_categories: int = DEFAULT_MAX_CATEGORIES  # one-hot columns, "other" included
    schema: Mapping[str, ColumnKind] = field(default_factory=dict)  # kind overrides

    @classmethod
    def from_spec(cls, spec: Any, max_categories: int | None = None) -> FeatureOptions:
        """From a TrainingSpec; ``max_categories``: the server's bound when the job names
        none (FITSERVE_MAX_CATEGORIES)."""
        cat = spec.categorical
        limit = cat.max_categories or max_categories or DEFAULT_MAX_CATEGORIES
        return cls(
            features=tuple(spec.features) if spec.features is not None else None,
            impute=spec.impute, missing_indicator=spec.missing_indicator,
            min_frequency=cat.min_frequency, max_categories=limit,
            schema=dict(spec.column_types or {}),
        )
