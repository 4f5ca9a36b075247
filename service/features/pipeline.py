"""``Pipeline``: imputation, one-hot with an "other" bucket, booleans as 0/1; fitted on the
training rows, stored as JSON, applied to a Table (training, evaluation) or to named fields
sent to predict. ``standardize`` (service/training/scaling.py) applies after it, unchanged.

The matrix it writes, column by column in the order of its inputs:

- numeric and boolean: the value (booleans 0/1), a missing one replaced by the training
  rows' mean or median; then ``<name>_missing`` (1 where it was missing) when the training
  rows had blanks in that column and the job kept ``missing_indicator``;
- categorical: ``<name>=<level>`` for each level seen on at least ``min_frequency``
  training rows (at most ``max_categories - 1`` of them when some are pooled), in sorted
  order; then ``<name>=other`` when some training levels were pooled: rare levels, and at
  predict the unseen ones, count there. Without pooled levels an unseen value has no column
  (all zeros: the model adds nothing for it), as scikit-learn's
  ``OneHotEncoder(handle_unknown="infrequent_if_exist")`` does. A missing value is the
  training rows' most frequent level.

With ``impute: none`` nothing is filled: a missing value is refused, naming its row and
column. The identity pipeline (a model trained on a numeric matrix) is all numeric inputs
without fills: its matrix is the input as sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.features.options import FeatureOptions
from service.store.tabular import Column, ColumnKind, Table

PIPELINE_VERSION = 1
"""The ``version`` key of the stored JSON; a reader refuses a version it does not know."""

Label = str | float | bool
"""A classifier's class label: the target's string, number or boolean."""

_MISSING = -1  # a categorical position: the cell is missing
_NO_COLUMN = -2  # an unseen level without an "other" column: it adds nothing


class FeatureError(InvalidInput):
    """Named fields or columns the pipeline cannot turn into the model's matrix."""


def label_text(value: Any) -> str:
    """A cell as a categorical level: strings as they are, ``true``/``false``, numbers
    without a trailing ``.0`` (``75001``, ``2.5``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    f = float(value)
    return str(int(f)) if f.is_integer() and abs(f) < 2**53 else repr(f)


@dataclass(frozen=True)
class InputColumn:
    name: str
    kind: ColumnKind
    fill: float | str | None = None  # what a missing value becomes; None: refused
    indicator: bool = False  # a "<name>_missing" column follows
    levels: tuple[str, ...] = ()  # categorical: one column each
    other: bool = False  # categorical: a "<name>=other" column for rare and unseen levels

    @property
    def outputs(self) -> list[str]:
        if self.kind == "categorical":
            names = [f"{self.name}={lv}" for lv in self.levels]
            names += [f"{self.name}=other"] if self.other else []
        else:
            names = [self.name]
        return names + ([f"{self.name}_missing"] if self.indicator else [])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "fill": self.fill,
                               "indicator": self.indicator}
        if self.kind == "categorical":
            out.update(levels=list(self.levels), other=self.other)
        return out

    def public(self) -> dict[str, Any]:
        """What a predict call must send for this column (GET /v1/models/{id})."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "required": self.fill is None}
        if self.fill is not None:
            out["fill"] = self.fill
        if self.kind == "categorical":
            out["levels"] = list(self.levels)
            out["other"] = self.other
        return out

    # ------------------------------------------------------------ one column's cells

    def positions(self, labels: Sequence[str | None]) -> np.ndarray:
        """Categorical levels -> int32 output positions (levels, then other), _MISSING,
        or _NO_COLUMN."""
        index = {lv: i for i, lv in enumerate(self.levels)}
        unseen = len(self.levels) if self.other else _NO_COLUMN
        return np.fromiter((_MISSING if v is None else index.get(v, unseen) for v in labels),
                           np.int32, len(labels))

    def width(self) -> int:
        return len(self.outputs)

    def write(self, out: np.ndarray, start: int, cells: np.ndarray, row0: int = 0) -> None:
        """Fill ``out[:, start:start + width]`` from this column's cells: float32 values
        with NaN missing (numeric, boolean) or ``positions`` (categorical)."""
        if self.kind == "categorical":
            missing = cells == _MISSING
            if missing.any():
                cells = cells.copy()
                cells[missing] = self._filled_position(missing, row0)
            rows = np.flatnonzero(cells >= 0)
            out[rows, start + cells[rows]] = 1.0
            end = start + len(self.levels) + int(self.other)
        else:
            missing = np.isnan(cells)
            if missing.any():
                self._refuse_missing(missing, row0)
                cells = np.where(missing, np.float32(self.fill), cells)
            out[:, start] = cells
            end = start + 1
        if self.indicator:
            out[:, end] = missing

    def _filled_position(self, missing: np.ndarray, row0: int) -> int:
        self._refuse_missing(missing, row0)
        return int(self.positions([str(self.fill)])[0])

    def _refuse_missing(self, missing: np.ndarray, row0: int) -> None:
        if self.fill is None:
            row = row0 + int(np.argmax(missing))
            raise FeatureError(f"row {row}: {self.name!r} is missing, and this model does not "
                               "impute it (it was trained with impute: none, or on a matrix "
                               "without blanks); send a value", field=self.name)

    # ------------------------------------------------------------ from a Table or JSON

    def table_cells(self, col: Column | None, rows: int) -> np.ndarray:
        """The cells of a Table's column as ``write`` takes them (converted to this input's
        kind where the job's ``schema`` changed it); a column the table lacks is all
        missing."""
        if col is None:
            return (np.full(rows, _MISSING, np.int32) if self.kind == "categorical"
                    else np.full(rows, np.nan, np.float32))
        if self.kind == "categorical":
            if col.kind == "categorical":
                lookup = np.append(self.positions(list(col.categories)), _MISSING)
                return lookup[col.values]  # code -1 reads the appended _MISSING
            col = as_kind(col, "categorical")
            return self.table_cells(col, rows)
        if col.kind == "categorical":
            col = as_kind(col, self.kind)
        return col.values

    def json_cells(self, values: Sequence[Any], row0: int = 0) -> np.ndarray:
        """A JSON list of one field's values (None: missing) as ``write`` takes them."""
        if self.kind == "categorical":
            if set(map(type, values)) <= {str}:
                return self.positions(values)
            return self.positions([_json_label(self.name, v, row0 + i)
                                   for i, v in enumerate(values)])
        types = set(map(type, values))
        if types <= {float, int} and values:
            try:
                arr = np.array(values, np.float64)
            except OverflowError:
                arr = None
            if arr is not None and np.isfinite(arr).all():
                if self.kind == "boolean" and not np.isin(arr, (0.0, 1.0)).all():
                    row = row0 + int(np.argmax(~np.isin(arr, (0.0, 1.0))))
                    raise FeatureError(f"row {row}: {self.name!r} is boolean: send true, "
                                       f"false, 0 or 1 (got {values[row - row0]!r})",
                                       field=self.name)
                return _float32(arr, self.name, row0)
        return _float32(np.array([_json_number(self.name, self.kind, v, row0 + i)
                                  for i, v in enumerate(values)], np.float64),
                        self.name, row0)


def _float32(arr: np.ndarray, name: str, row0: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    bad = np.isinf(out)
    if bad.any():
        row = row0 + int(np.argmax(bad))
        raise FeatureError(f"row {row}: {name!r} = {arr[row - row0]:g} overflows float32",
                           field=name)
    return out


def _json_number(name: str, kind: str, v: Any, row: int) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool):
        if kind == "boolean":
            return float(v)
    elif isinstance(v, int | float):
        if kind == "boolean" and v not in (0, 1):
            raise FeatureError(f"row {row}: {name!r} is boolean: send true, false, 0 or 1 "
                               f"(got {v!r})", field=name)
        if math.isfinite(v):
            return float(v)
        raise FeatureError(f"row {row}: {name!r} must be a finite number", field=name)
    what = "true, false, 0 or 1" if kind == "boolean" else "a number"
    shown = repr(v)[:40]
    raise FeatureError(f"row {row}: {name!r} is {kind}: send {what} or null (got {shown})",
                       field=name)


def _json_label(name: str, v: Any, row: int) -> str | None:
    if v is None:
        return None
    if isinstance(v, str | bool | int | float) and not (isinstance(v, float)
                                                        and not math.isfinite(v)):
        return label_text(v)
    raise FeatureError(f"row {row}: {name!r} is categorical: send a string, a number or null "
                       f"(got {repr(v)[:40]})", field=name)


def as_kind(col: Column, kind: ColumnKind) -> Column:
    """A Table column read as another kind (the job's ``schema`` override): numbers and
    booleans as levels (``75001``, ``true``), levels as numbers or booleans."""
    if col.kind == kind or (col.kind != "categorical" and kind != "categorical"
                            and kind == "numeric"):
        return Column(col.name, kind, col.values, col.categories)
    if kind == "categorical":
        present = ~np.isnan(col.values)
        levels, codes = np.unique(col.values[present], return_inverse=True)
        out = np.full(len(col.values), -1, np.int32)
        out[present] = codes
        texts = [label_text(bool(v) if col.kind == "boolean" else float(v)) for v in levels]
        return Column(col.name, "categorical", out, tuple(texts))
    if col.kind == "categorical":
        parsed = [_parse_level(col.name, kind, c) for c in col.categories]
        values = np.append(np.array(parsed, np.float32), np.float32(np.nan))[col.values]
        return Column(col.name, kind, values.astype(np.float32))
    values = col.values  # numeric -> boolean: 0 and 1 only
    present = values[~np.isnan(values)]
    if not np.isin(present, (0.0, 1.0)).all():
        raise FeatureError(f"column {col.name!r} cannot be boolean: it holds "
                           f"{float(present[~np.isin(present, (0.0, 1.0))][0]):g}",
                           field="schema")
    return Column(col.name, kind, values)


_TRUE, _FALSE = {"true", "yes", "1", "t", "y"}, {"false", "no", "0", "f", "n"}


def _parse_level(name: str, kind: ColumnKind, text: str) -> float:
    if kind == "boolean":
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return float(low in _TRUE)
    else:
        try:
            value = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return value
    raise FeatureError(f"column {name!r} cannot be {kind}: it holds {text[:40]!r}",
                       field="schema")


@dataclass(frozen=True)
class Pipeline:
    inputs: tuple[InputColumn, ...]
    targets: tuple[str, ...] = ()
    labels: tuple[Label, ...] | None = None  # a classifier's labels, in class index order
    identity: bool = False  # a numeric matrix model's: x passes as sent

    @property
    def output_names(self) -> list[str]:
        return [name for col in self.inputs for name in col.outputs]

    @property
    def input_names(self) -> list[str]:
        return [col.name for col in self.inputs]

    @property
    def width(self) -> int:
        return sum(col.width() for col in self.inputs)

    def to_json(self) -> dict[str, Any]:
        return {"version": PIPELINE_VERSION, "inputs": [c.to_json() for c in self.inputs],
                "targets": list(self.targets),
                "labels": None if self.labels is None else list(self.labels)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pipeline:
        if data.get("version") != PIPELINE_VERSION:
            raise ValueError(f"feature pipeline version {data.get('version')!r} is not "
                             f"{PIPELINE_VERSION}")
        inputs = tuple(InputColumn(c["name"], c["kind"], c.get("fill"),
                                   bool(c.get("indicator")), tuple(c.get("levels", ())),
                                   bool(c.get("other"))) for c in data["inputs"])
        if any(c.kind not in ("numeric", "categorical", "boolean") for c in inputs):
            raise ValueError("unknown column kind in the feature pipeline")
        labels = data.get("labels")
        return cls(inputs, tuple(data.get("targets", ())),
                   None if labels is None else tuple(labels))

    # ------------------------------------------------------------ applying it

    def transform(self, table: Table) -> np.ndarray:
        """A Table's rows as the model's float32 matrix (N, width)."""
        by_name = {c.name: c for c in table.features}
        return self._matrix({col.name: col.table_cells(by_name.get(col.name), table.rows)
                             for col in self.inputs}, table.rows)

    def fields(self, columns: Mapping[str, Sequence[Any] | None], rows: int,
               row0: int = 0) -> np.ndarray:
        """Named JSON fields (each a list of ``rows`` values, None where missing; a field
        absent altogether is None) as the model's float32 matrix."""
        fast = self._numbers_only(columns, rows)
        if fast is not None:
            return fast
        cells: dict[str, np.ndarray] = {}
        for col in self.inputs:
            values = columns.get(col.name)
            cells[col.name] = (col.table_cells(None, rows) if values is None
                               else col.json_cells(values, row0))
        return self._matrix(cells, rows, row0)

    @cached_property
    def known(self) -> frozenset[str]:
        """The input names, and the targets' (a row sent back as stored may carry them)."""
        return frozenset(self.input_names) | frozenset(self.targets)

    def unknown(self, names: Iterable[str]) -> list[str]:
        known = self.known
        return sorted(n for n in names if n not in known)

    @cached_property
    def _value_columns(self) -> np.ndarray | None:
        """Where each input's value goes when every input is numeric; None otherwise."""
        if not all(c.kind == "numeric" for c in self.inputs):
            return None
        starts = np.cumsum([0] + [c.width() for c in self.inputs])[:-1]
        return starts.astype(np.int64)

    def _numbers_only(self, columns: Mapping[str, Sequence[Any] | None], rows: int
                      ) -> np.ndarray | None:
        """The common call, in one conversion: every input numeric, every field sent, every
        value a finite number (so nothing is imputed). None: take the column-wise path,
        which also finds any error."""
        where = self._value_columns
        if where is None:
            return None
        lists = [columns.get(c.name) for c in self.inputs]
        if any(v is None for v in lists):
            return None
        if not set(map(type, chain.from_iterable(lists))) <= {float, int}:  # type: ignore[arg-type]
            return None
        try:
            arr = np.array(lists, np.float64)  # (inputs, N)
        except (OverflowError, ValueError):
            return None
        with np.errstate(over="ignore"):
            values = arr.T.astype(np.float32)  # (N, inputs)
        if arr.shape != (len(lists), rows) or not np.isfinite(values).all():
            return None
        if len(where) == self.width:
            return values
        out = np.zeros((rows, self.width), np.float32)
        out[:, where] = values
        return out

    def _matrix(self, cells: Mapping[str, np.ndarray], rows: int, row0: int = 0
                ) -> np.ndarray:
        out = np.zeros((rows, self.width), np.float32)
        start = 0
        for col in self.inputs:
            col.write(out, start, cells[col.name], row0)
            start += col.width()
        return out


def identity_pipeline(feature_names: Sequence[str], targets: Sequence[str] = ()) -> Pipeline:
    """A numeric matrix model's: each feature numeric, nothing filled."""
    return Pipeline(tuple(InputColumn(n, "numeric") for n in feature_names), tuple(targets),
                    identity=True)


def fit_pipeline(train: Table, options: FeatureOptions) -> Pipeline:
    """The pipeline of these (training) rows: ``train``'s features as the job selected and
    typed them (``prepare.select``)."""
    return Pipeline(tuple(_fit_column(c, options) for c in train.features),
                    tuple(train.target_names))


def _fit_column(col: Column, options: FeatureOptions) -> InputColumn:
    missing = col.missing
    blanks = bool(missing.any())
    if blanks and options.impute == "none":
        row = int(np.argmax(missing))
        raise FeatureError(f"column {col.name!r} is missing in training row {row}, and the "
                           "job has impute: none: choose mean or median, or leave the "
                           "column out (features)", field="impute")
    indicator = blanks and options.missing_indicator and options.impute != "none"
    if col.kind != "categorical":
        fill = None
        if options.impute != "none":
            present = col.values[~missing].astype(np.float64)
            if not len(present):
                fill = 0.0
            elif options.impute == "median":
                fill = float(np.median(present))
            else:
                fill = float(present.mean())
        return InputColumn(col.name, col.kind, fill, indicator)
    counts = np.bincount(col.values[~missing], minlength=len(col.categories))
    seen = [(col.categories[i], int(n)) for i, n in enumerate(counts) if n > 0]
    if not seen:  # its values all fell in the validation rows: nothing to learn a level from
        raise FeatureError(f"column {col.name!r} has no value in the training rows (only "
                           "blanks): leave it out (features), or give it values",
                           field="features")
    frequent = [(lv, n) for lv, n in seen if n >= options.min_frequency]
    pooled = len(frequent) < len(seen)
    if len(frequent) > options.max_categories or (pooled and len(frequent)
                                                   >= options.max_categories):
        # the most frequent first (ties: by level), one column left for "other"
        frequent = sorted(frequent, key=lambda t: (-t[1], t[0]))[: options.max_categories - 1]
        pooled = True
    fill_level = None
    if options.impute != "none" and seen:
        fill_level = min(seen, key=lambda t: (-t[1], t[0]))[0]  # most frequent, then first
    return InputColumn(col.name, "categorical", fill_level, indicator,
                       tuple(sorted(lv for lv, _ in frequent)), pooled)
