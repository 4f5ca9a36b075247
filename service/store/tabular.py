"""A dataset with mixed columns: numeric, boolean and categorical cells, some missing.

A dataset whose cells are all finite numbers is stored as today (tensors ``x`` and ``y``,
service/store/artifacts.py): the seed example's path does not change. Any other dataset is
a ``Table``, stored in the same safetensors file format (never a pickle): one tensor per
column, its kind and categories in the file's metadata.

- numeric and boolean columns: float32, missing cells NaN, booleans 0.0/1.0;
- categorical columns: int32 codes into ``categories`` (strings), missing cells -1.

The model's feature pipeline (service/features/) turns a Table's training rows into the
float32 matrix the engines train on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from safetensors.numpy import load, save

ColumnKind = Literal["numeric", "categorical", "boolean"]
KINDS: tuple[ColumnKind, ...] = ("numeric", "categorical", "boolean")
FORMAT = "fitserve.table/1"  # the metadata's "format": which reader a dataset file needs


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    values: np.ndarray  # numeric/boolean: float32 (NaN missing); categorical: int32 (-1 missing)
    categories: tuple[str, ...] = ()  # categorical: code -> label

    def __post_init__(self) -> None:
        want = np.int32 if self.kind == "categorical" else np.float32
        if self.values.dtype != want or self.values.ndim != 1:
            raise ValueError(f"column {self.name!r} ({self.kind}) must be 1-D {want.__name__}")

    @property
    def missing(self) -> np.ndarray:
        """A boolean mask of the missing cells."""
        if self.kind == "categorical":
            return self.values < 0
        return np.isnan(self.values)

    def take(self, rows: np.ndarray) -> Column:
        return Column(self.name, self.kind, self.values[rows], self.categories)


@dataclass(frozen=True)
class Table:
    features: list[Column]
    targets: list[Column]
    name: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int((self.features or self.targets)[0].values.shape[0])

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.features]

    @property
    def target_names(self) -> list[str]:
        return [c.name for c in self.targets]

    def take(self, rows: np.ndarray) -> Table:
        """These rows only (training or validation rows)."""
        return Table([c.take(rows) for c in self.features],
                     [c.take(rows) for c in self.targets], self.name, self.extra)

    def schema(self) -> list[dict[str, object]]:
        """Each column's name, role, kind and categories: the file's metadata."""
        return [{"name": c.name, "role": role, "kind": c.kind,
                 **({"categories": list(c.categories)} if c.kind == "categorical" else {})}
                for role, cols in (("feature", self.features), ("target", self.targets))
                for c in cols]


def is_table(metadata: dict[str, str] | None) -> bool:
    return bool(metadata) and metadata.get("format") == FORMAT  # type: ignore[union-attr]


def table_bytes(table: Table) -> bytes:
    """The Table as a safetensors file: tensors ``f.<i>`` and ``t.<i>`` in column order."""
    tensors = {f"f.{i}": np.ascontiguousarray(c.values) for i, c in enumerate(table.features)}
    tensors.update({f"t.{i}": np.ascontiguousarray(c.values)
                    for i, c in enumerate(table.targets)})
    meta = {"format": FORMAT, "schema": json.dumps(table.schema())}
    if table.name is not None:
        meta["name"] = table.name
    return save(tensors, metadata=meta)


def table_from_tensors(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> Table:
    """The Table a file's tensors and metadata hold (see ``table_bytes``)."""
    if not is_table(metadata):
        raise ValueError("not a fitserve table")
    schema = json.loads(metadata["schema"])
    features: list[Column] = []
    targets: list[Column] = []
    for col in schema:
        role = col["role"]
        out = features if role == "feature" else targets
        key = f"{'f' if role == 'feature' else 't'}.{len(out)}"
        out.append(Column(col["name"], col["kind"], tensors[key],
                          tuple(col.get("categories", ()))))
    return Table(features, targets, metadata.get("name"))


def safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (8-byte length, then JSON)."""
    size = int.from_bytes(blob[:8], "little")
    return dict(json.loads(blob[8 : 8 + size]).get("__metadata__") or {})


def table_from_bytes(blob: bytes) -> Table:
    return table_from_tensors(load(blob), safetensors_metadata(blob))
