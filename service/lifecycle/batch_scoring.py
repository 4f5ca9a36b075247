"""A model scored over a stored dataset, chunk by chunk, into one file: the body of a batch
prediction (POST /v1/predictions), run by a worker.

The dataset's safetensors file is read a chunk of rows at a time (its header gives each
tensor's byte range, so a chunk is one ranged read per column: from a local file or an
object store alike, never the whole file), the chunk goes through the same ``LoadedModel``
that serves /predict, and the rows are handed to polars' streaming sink (CSV, Parquet or
NDJSON), which writes them out as they come. The memory is a few chunks, whatever the
dataset's size. Blocking (disk and CPU).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from service.errors import InvalidInput, PredictionFailed
from service.features.pipeline import label_text
from service.serving.predictor import LoadedModel, Prediction
from service.store.tables import DatasetRow
from service.store.tabular import Column, Table, is_table

if TYPE_CHECKING:  # polars is imported where a result is written (a worker), not by the
    import polars as pl  # API, which only checks the first rows (a predict replica's RSS)

_ROW = re.compile(r"\brow (\d+)")
"""A row number in a refusal's message: counted from its chunk, said from the dataset's."""
_DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8"}
_SINKS = {"csv": "sink_csv", "parquet": "sink_parquet", "jsonl": "sink_ndjson"}
_INPUT_TYPES = {"numeric": "Float32", "boolean": "Boolean", "categorical": "String"}


class DatasetChunks:
    """A stored dataset's feature columns, read a range of rows at a time from its file
    (the format of service/store/artifacts.py and tabular.py; the header is parsed as JSON,
    never executed)."""

    def __init__(self, f: IO[bytes], dataset: DatasetRow) -> None:
        self._f = f
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        self._metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._base = 8 + size
        self._tensors: dict[str, dict[str, Any]] = header
        self.rows = dataset.rows
        self.typed = is_table(self._metadata)
        if self.typed:
            schema = json.loads(self._metadata["schema"])
            self.kinds = [(c["name"], c["kind"], tuple(c.get("categories", ())))
                          for c in schema if c["role"] == "feature"]
        else:
            self.kinds = [(n, "numeric", ()) for n in dataset.feature_names]

    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        info = self._tensors[name]
        dtype = np.dtype(_DTYPES[info["dtype"]])
        shape = tuple(info["shape"])
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        self._f.seek(self._base + info["data_offsets"][0] + start * row_bytes)
        raw = self._f.read((stop - start) * row_bytes)
        if len(raw) != (stop - start) * row_bytes:
            raise OSError(f"the dataset's file ends before row {stop}")
        return np.frombuffer(raw, dtype).reshape((stop - start, *shape[1:]))

    def matrix(self, start: int, stop: int) -> np.ndarray:
        """A numeric dataset's x rows ``start:stop``: (N, features) float32."""
        return self._read("x", start, stop)

    def columns(self, start: int, stop: int) -> list[Column]:
        """Every feature column's rows ``start:stop``, as a Table holds them."""
        if not self.typed:
            x = self.matrix(start, stop)
            return [Column(name, "numeric", x[:, i]) for i, (name, _, _) in
                    enumerate(self.kinds)]
        return [Column(name, kind, self._read(f"f.{i}", start, stop), cats)
                for i, (name, kind, cats) in enumerate(self.kinds)]


@dataclass(frozen=True)
class InputPlan:
    """How a chunk of the dataset becomes the model's x: the dataset's x columns in the
    model's order (a matrix model on a numeric dataset), or, with ``columns`` None, the
    feature columns by name through the model's pipeline."""

    columns: tuple[int, ...] | None

    def x(self, model: LoadedModel, chunks: DatasetChunks, start: int, stop: int,
          columns: list[Column] | None = None) -> np.ndarray:
        """The model's x for rows ``start:stop`` (``columns``: those rows' feature columns,
        when already read)."""
        if self.columns is not None:
            return np.ascontiguousarray(chunks.matrix(start, stop)[:, list(self.columns)],
                                        dtype=np.float32)
        if model.pipeline is None:  # checked at submit (plan_inputs)
            raise InvalidInput(f"model {model.id} has no feature names", field="model")
        if columns is None:
            columns = chunks.columns(start, stop)
        return model.pipeline.transform(Table(columns, []))


def output_names(model: LoadedModel, target_names: list[str]) -> list[str]:
    """The prediction's columns: each target (regression); a classifier's label (named
    after its target) and ``probability_<class>`` for each class."""
    if model.classes is None:
        return list(target_names)
    label = target_names[0] if len(target_names) == 1 else "label"
    keys = model.label_keys or tuple(str(i) for i in range(int(model.classes)))
    return [label, *(f"probability_{k}" for k in keys)]


def result_schema(model: LoadedModel, target_names: list[str], inputs: list[tuple[str, str]]
                  ) -> dict[str, Any]:
    """The result's columns and types: the inputs (when asked for) as they are stored, then
    the prediction (a name an input has already gets ``predicted_`` before it)."""
    import polars as pl

    schema: dict[str, Any] = {name: getattr(pl, _INPUT_TYPES[kind]) for name, kind in inputs}
    names = output_names(model, target_names)
    for i, name in enumerate(names):
        key = f"predicted_{name}" if name in schema else name
        if model.classes is not None and i == 0:
            schema[key] = pl.String if model.label_keys is not None else pl.Int64
        else:
            schema[key] = pl.Float32
    return schema


def _input_series(col: Column) -> pl.Series:
    import polars as pl

    if col.kind == "categorical":
        texts = pl.Series(col.name, [*col.categories, None], dtype=pl.String)
        return texts.gather(np.where(col.values < 0, len(col.categories), col.values))
    values = pl.Series(col.name, col.values, dtype=pl.Float32).fill_nan(None)
    return values.cast(pl.Boolean) if col.kind == "boolean" else values


def _prediction_columns(model: LoadedModel, p: Prediction) -> list[pl.Series | np.ndarray]:
    if model.classes is None:
        return [p.y[:, i] for i in range(p.y.shape[1])]
    assert p.labels is not None and p.probabilities is not None
    import polars as pl

    if model.pipeline is not None and model.pipeline.labels is not None:
        texts = pl.Series([label_text(v) for v in model.pipeline.labels], dtype=pl.String)
        label: pl.Series | np.ndarray = texts.gather(p.labels)
    else:
        label = p.labels.astype(np.int64)
    return [label, *(p.probabilities[:, j] for j in range(p.probabilities.shape[1]))]


def score_to_file(
    out: IO[bytes], fmt: str, model: LoadedModel, plan: InputPlan, chunks: DatasetChunks,
    target_names: list[str], include_input: bool, chunk_rows: int,
    on_chunk: Callable[[int], None] = lambda rows: None,
) -> int:
    """Write the model's predictions of every row of ``chunks`` to ``out`` as ``fmt``,
    ``chunk_rows`` at a time; ``on_chunk(rows done)`` after each chunk (it may raise to
    stop: the exception comes out of here). Returns the rows written. A row the model
    refuses (a missing value it does not impute, an overflow) is a PredictionFailed naming
    its row."""
    import polars as pl
    from polars.io.plugins import register_io_source

    inputs = [(name, kind) for name, kind, _ in chunks.kinds] if include_input else []
    schema = result_schema(model, target_names, inputs)
    names = list(schema)

    def frames(with_columns: list[str] | None, *_: Any) -> Iterator[pl.DataFrame]:
        for start in range(0, chunks.rows, chunk_rows):
            stop = min(start + chunk_rows, chunks.rows)
            cols = chunks.columns(start, stop) if include_input or plan.columns is None \
                else None
            try:
                p = model.infer(plan.x(model, chunks, start, stop, cols))
            except InvalidInput as e:  # FeatureError too; their rows count from the chunk
                raise PredictionFailed(_from_row(e.message, start)) from None
            data: list[Any] = [_input_series(c) for c in cols or ()] if include_input else []
            data += _prediction_columns(model, p)
            frame = pl.DataFrame(dict(zip(names, data, strict=True)), schema=schema)
            yield frame if with_columns is None else frame.select(with_columns)
            on_chunk(stop)

    lazy = register_io_source(frames, schema=schema)
    getattr(lazy, _SINKS[fmt])(out)
    return chunks.rows


def _from_row(message: str, start: int) -> str:
    """A refusal's message with its row numbers counted from the dataset's first row."""
    return _ROW.sub(lambda m: f"row {int(m[1]) + start}", message)
