"""A frame's cells -> typed columns (numeric, boolean, categorical), with errors that name
the row and column at fault; the schema a dataset's page shows; a Table's content hash.

The rule for text among numbers (issue 12): a column whose present cells are text is
categorical; a column where at least half the present cells read as numbers is numeric,
and its first cell that is not one is an error (a typo, not a category), unless the client
declares the column categorical (``schema``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.data.table import KINDS, Column, ColumnKind, Table
from service.errors import InvalidInput, LimitExceeded

if TYPE_CHECKING:
    import polars as pl

TRUE = frozenset({"true", "yes"})
FALSE = frozenset({"false", "no"})
TOP = 5
"""How many of a categorical column's most frequent values the schema shows."""
_F32_MAX = float(np.finfo(np.float32).max)

Where = Callable[[int, str], str]
"""(row index, column name) -> how the format names that cell: ``CSV line 3 column 2``."""


@dataclass(frozen=True)
class Origin:
    """How a format's cells are named in errors, and what its float NaN means."""

    where: Where
    nan_is_missing: bool = False  # Parquet and Arrow from pandas: NaN is a missing value
    how_to_declare: str = "?schema={name}:categorical"


def parse_schema(given: Any, field: str = "schema") -> dict[str, ColumnKind]:
    """``{"zip": "categorical"}``, or the query's form ``["zip:categorical,a:boolean"]``."""
    if given is None:
        return {}
    if isinstance(given, list):
        pairs: dict[str, Any] = {}
        for raw in given:
            if not isinstance(raw, str):
                raise InvalidInput(f"{field} must be name:type pairs", field=field)
            for part in raw.split(","):
                if not part.strip():
                    continue
                name, sep, kind = part.rpartition(":")
                if not sep or not name.strip():
                    raise InvalidInput(f"{field} {part.strip()!r} must be name:type, e.g. "
                                       "zip:categorical", field=field)
                pairs[name.strip()] = kind.strip().lower()
        given = pairs
    if not isinstance(given, dict):
        raise InvalidInput(f'{field} must be an object: {{"zip": "categorical"}}', field=field)
    out: dict[str, ColumnKind] = {}
    for name, kind in given.items():
        if kind not in KINDS:
            raise InvalidInput(f"{field}: column {name!r} has type {kind!r}; use one of "
                               f"{', '.join(KINDS)}", field=field)
        out[str(name)] = kind
    return out


def _shown(cell: object) -> str:
    text = str(cell)
    return text if len(text) <= 40 else text[:37] + "..."


def _decimal_hint(cell: str) -> str:
    try:
        number = float(cell.strip().replace(",", "."))
    except ValueError:
        return ""
    return f" (write decimals with a point: {number:g})" if "," in cell else ""


def _first(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def to_column(series: pl.Series, kind: ColumnKind | None, origin: Origin,
              max_categories: int) -> Column:
    """One frame column as a typed Column; ``kind``: the client's declaration, if any."""
    import polars as pl

    name = series.name
    dtype = series.dtype
    if dtype == pl.Null or series.null_count() == len(series):
        raise InvalidInput(f"column {name!r} is entirely empty: drop it or fill it",
                           field=name)
    if isinstance(dtype, pl.Enum | pl.Categorical):
        series = series.cast(pl.String)
    if series.dtype == pl.String:
        series = series.str.strip_chars()
        series = series.set(series == "", None)
        if series.null_count() == len(series):
            raise InvalidInput(f"column {name!r} is entirely empty: drop it or fill it",
                               field=name)
    if kind is None:
        kind = _infer_kind(series, origin)
    if kind == "categorical":
        return _categorical(series, origin, max_categories)
    if kind == "boolean":
        return _boolean(series, origin)
    return _numeric(series, origin)


def _infer_kind(series: pl.Series, origin: Origin) -> ColumnKind:
    import polars as pl

    dtype = series.dtype
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_numeric():
        return "numeric"
    if dtype != pl.String:
        raise InvalidInput(f"column {series.name!r} has type {dtype}, which is not read: send "
                           "numbers, text or booleans", field=series.name)
    present = series.drop_nulls()
    lowered = present.str.to_lowercase().unique()
    if lowered.is_in(list(TRUE | FALSE)).all():
        return "boolean"
    numbers = present.cast(pl.Float64, strict=False).is_not_null().sum()
    commas = present.str.replace(",", ".", literal=True).cast(pl.Float64, strict=False)
    if max(numbers, int(commas.is_not_null().sum())) * 2 >= len(present):
        return "numeric"  # mostly numbers: a cell that is not one is an error (_numeric)
    return "categorical"


def _numeric(series: pl.Series, origin: Origin) -> Column:
    import polars as pl

    name = series.name
    if series.dtype == pl.Boolean:
        series = series.cast(pl.Float64)
    if series.dtype == pl.String:
        parsed = series.cast(pl.Float64, strict=False)
        bad = parsed.is_null() & series.is_not_null()
        if bad.any():
            row = _first(bad)
            cell = str(series[row])
            hint = _decimal_hint(cell) or (
                f"; if column {name!r} holds categories, declare it: "
                f"{origin.how_to_declare.format(name=name)}")
            raise InvalidInput(f"{origin.where(row, name)} is not a number: {_shown(cell)!r}"
                               f"{hint}", field=name)
        series = parsed
    values = series.cast(pl.Float64).fill_null(float("nan")).to_numpy()
    present = ~series.is_null().to_numpy()
    if origin.nan_is_missing:
        present &= ~np.isnan(values)
    bad_cells = present & ~np.isfinite(values)
    if bad_cells.any():
        row = int(np.argmax(bad_cells))
        raise InvalidInput(f"{origin.where(row, name)} is not a finite number "
                           f"({values[row]})", field=name)
    over = present & (np.abs(values) > _F32_MAX)
    if over.any():
        row = int(np.argmax(over))
        raise InvalidInput(f"{origin.where(row, name)} ({values[row]:g}) overflows float32",
                           field=name)
    out = values.astype(np.float32)
    out[~present] = np.nan
    return Column(name, "numeric", out)


def _boolean(series: pl.Series, origin: Origin) -> Column:
    import polars as pl

    name = series.name
    if series.dtype == pl.String:
        lowered = series.str.to_lowercase()
        truth = lowered.is_in(list(TRUE))
        known = truth | lowered.is_in(list(FALSE)) | lowered.is_null()
        if not known.all():
            row = _first(~known)
            raise InvalidInput(f"{origin.where(row, name)} is not a boolean: "
                               f"{_shown(series[row])!r} (true, false, yes or no)", field=name)
        series = pl.Series(name, truth).set(lowered.is_null(), None)
    elif series.dtype.is_numeric():
        known = series.is_in([0, 1]) | series.is_null()
        if not known.all():
            row = _first(~known)
            raise InvalidInput(f"{origin.where(row, name)} is not a boolean: "
                               f"{_shown(series[row])!r} (0 or 1)", field=name)
    values = series.cast(pl.Float32).fill_null(float("nan")).to_numpy().astype(np.float32)
    return Column(name, "boolean", values)


def _categorical(series: pl.Series, origin: Origin, max_categories: int) -> Column:
    import polars as pl

    name = series.name
    if series.dtype != pl.String:
        if series.dtype.is_float():  # 75001.0 read from a file with blanks: "75001"
            whole = series.drop_nulls()
            if (whole == whole.round(0)).all():
                series = series.cast(pl.Int64)
        series = series.cast(pl.String)
    distinct = series.drop_nulls().unique(maintain_order=True)
    if len(distinct) > max_categories:
        firsts = series.is_first_distinct() & series.is_not_null()
        row = int(firsts.arg_true()[max_categories])
        raise LimitExceeded(
            f"column {name!r} has {len(distinct)} distinct values, more than the limit of "
            f"{max_categories} categories (FITSERVE_MAX_CATEGORIES); the one past the limit "
            f"is at {origin.where(row, name)}: {_shown(series[row])!r}", field=name)
    categories = tuple(sorted(distinct.to_list()))
    codes = series.cast(pl.Enum(list(categories))).to_physical()
    values = codes.cast(pl.Int32).fill_null(-1).to_numpy().astype(np.int32)
    return Column(name, "categorical", values, categories)


def check_target(col: Column, origin: Origin) -> None:
    missing = col.missing
    if missing.any():
        row = int(np.argmax(missing))
        raise InvalidInput(f"target {col.name!r} has {int(missing.sum())} missing value"
                           f"{'' if missing.sum() == 1 else 's'}, the first at "
                           f"{origin.where(row, col.name)}: drop those rows or fill them",
                           field=col.name)


def is_plain_numeric(table: Table) -> bool:
    """Every cell a finite number: stored as the x/y matrices of a numeric dataset."""
    return all(c.kind == "numeric" and not np.isnan(c.values).any()
               for c in (*table.features, *table.targets))


def as_matrices(table: Table) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((table.rows, len(table.features)), dtype=np.float32)
    y = np.empty((table.rows, len(table.targets)), dtype=np.float32)
    for out, cols in ((x, table.features), (y, table.targets)):
        for j, c in enumerate(cols):
            out[:, j] = c.values
    return x, y


def table_sha256(table: Table) -> str:
    """A Table's identity: its schema (names, roles, kinds, categories), row count, then each
    column's values, little-endian, in schema order (NaN in one canonical form). The file's
    bytes are not canonical (safetensors' metadata order varies)."""
    h = hashlib.sha256()
    h.update(json.dumps(["fitserve.table/1", table.rows, table.schema()],
                        separators=(",", ":")).encode())
    for c in (*table.features, *table.targets):
        if c.kind == "categorical":
            h.update(np.ascontiguousarray(c.values, dtype="<i4").data)
        else:
            v = np.ascontiguousarray(c.values, dtype="<f4")
            nan = np.isnan(v)
            if nan.any():
                v = v.copy()
                v[nan] = np.float32("nan")
            h.update(v.data)
    return h.hexdigest()


def column_schema(table: Table) -> list[dict[str, Any]]:
    """What ``GET /v1/datasets/{id}`` shows of each column: role, type, missing count, and
    mean/std/min/max (numeric, boolean) or distinct count and most frequent values."""
    out: list[dict[str, Any]] = []
    for role, cols in (("feature", table.features), ("target", table.targets)):
        for c in cols:
            missing = c.missing
            entry: dict[str, Any] = {"name": c.name, "role": role, "type": c.kind,
                                     "missing": int(missing.sum())}
            if c.kind == "categorical":
                counts = np.bincount(c.values[~missing], minlength=len(c.categories))
                order = sorted(range(len(counts)), key=lambda i: (-counts[i], i))[:TOP]
                entry.update(distinct=int((counts > 0).sum()),
                             top=[{"value": c.categories[i], "count": int(counts[i])}
                                  for i in order if counts[i] > 0],
                             mean=None, std=None, min=None, max=None)
            else:
                present = c.values[~missing].astype(np.float64)
                entry.update(mean=float(present.mean()), std=float(present.std()),
                             min=float(present.min()), max=float(present.max()))
            out.append(entry)
    return out


def frame_columns(frame: pl.DataFrame, features: list[str], targets: list[str],
                  schema: Mapping[str, ColumnKind], origin: Origin,
                  max_categories: int) -> Table:
    """The named columns of a frame as a Table; the targets checked for missing values."""
    unknown = [n for n in schema if n not in frame.columns]
    if unknown:
        raise InvalidInput(f"schema names column(s) {', '.join(map(repr, unknown))} that the "
                           f"data does not have ({', '.join(frame.columns)})", field="schema")
    feats = [to_column(frame[n], schema.get(n), origin, max_categories) for n in features]
    targs = [to_column(frame[n], schema.get(n), origin, max_categories) for n in targets]
    for t in targs:
        check_target(t, origin)
    return Table(feats, targs)
