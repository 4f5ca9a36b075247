"""Upload formats -> a numeric dataset (x, y) or a Table, read by polars from a spool file
(or bytes): CSV, JSON (``x``/``y`` matrices, records, columns), NDJSON, Parquet, Arrow.

A CSV of plain numbers takes a fast path: the file is read in blocks of whole lines, each
parsed as float32 by polars and copied into the matrices, so memory stays near the size of
the stored arrays. Anything else (text, blanks, quotes) is read whole with types inferred,
then each column is typed (service/data/columns.py).
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from service.data.arrays import as_matrix, check_xy, decode_json
from service.data.columns import Origin, as_matrices, frame_columns, is_plain_numeric, parse_schema
from service.data.table import ColumnKind, Table
from service.errors import InvalidInput, unknown_field_message

if TYPE_CHECKING:
    import polars as pl

Media = Literal["json", "csv", "ndjson", "parquet", "arrow", "arrow-file"]
Source = Path | bytes
Numeric = tuple[np.ndarray, np.ndarray, dict[str, Any]]
Parsed = Numeric | Table

NULLS = ["NA", "N/A", "n/a", "#N/A", "NULL", "null", "None"]
"""CSV cells read as missing, besides empty ones (R writes NA; pandas writes an empty cell)."""
_BLOCK = 2 << 20
"""Bytes of CSV parsed at a time on the numeric path."""

MEDIA_TYPES: dict[str, Media] = {
    "text/csv": "csv", "application/csv": "csv",
    "application/x-ndjson": "ndjson", "application/ndjson": "ndjson",
    "application/jsonl": "ndjson", "application/x-jsonlines": "ndjson",
    "application/vnd.apache.parquet": "parquet", "application/x-parquet": "parquet",
    "application/vnd.apache.arrow.stream": "arrow",
    "application/vnd.apache.arrow.file": "arrow-file",
}
_FORMAT_NAMES = {"ndjson": "NDJSON", "parquet": "Parquet", "arrow": "Arrow stream",
                 "arrow-file": "Arrow file", "json": "JSON", "csv": "CSV"}


def media_of(content_type: str) -> Media | None:
    from service.data.arrays import is_json

    if is_json(content_type):
        return "json"
    return MEDIA_TYPES.get(content_type)


def read_upload(source: Source, media: Media, *, target: list[str],
                features: list[str] | None, name: str | None,
                schema: dict[str, ColumnKind], max_categories: int) -> Parsed:
    """Read and check an upload; blocking (polars releases the GIL while it parses)."""
    if media == "json":
        return _from_json_body(_read_bytes(source), max_categories)
    if media == "csv":
        return _from_csv(source, target, features, name, schema, max_categories)
    frame = _read_binary(source, media)
    label = _FORMAT_NAMES[media]
    if media == "ndjson":
        origin = Origin(lambda row, col: f"NDJSON line {row + 1} field {col!r}")
    else:
        origin = Origin(lambda row, col: f"row {row} column {col!r}", nan_is_missing=True)
    feats, targs = _roles(list(frame.columns), target, features, f"the {label} columns")
    plain = _plain_numbers(frame, feats, targs, schema)
    if plain is not None:
        return (*plain, {"name": name, "feature_names": feats, "target_names": targs})
    return _finish(frame_columns(frame, feats, targs, schema, origin, max_categories), name)


def _plain_numbers(frame: pl.DataFrame, features: list[str], targets: list[str],
                   schema: dict[str, ColumnKind]) -> tuple[np.ndarray, np.ndarray] | None:
    """Numeric columns without a null, NaN or infinity, straight into (x, y) float32; None
    otherwise (the column-by-column reader then types them and names what is wrong)."""
    chosen = features + targets
    if any(schema.get(c, "numeric") != "numeric" or not frame[c].dtype.is_numeric()
           for c in chosen) or frame.select(chosen).null_count().sum_horizontal().item():
        return None
    x = np.empty((frame.height, len(features)), dtype=np.float32)
    y = np.empty((frame.height, len(targets)), dtype=np.float32)
    for out, names in ((x, features), (y, targets)):
        for j, c in enumerate(names):
            with np.errstate(over="ignore", invalid="ignore"):
                out[:, j] = frame[c].to_numpy()
            if not np.isfinite(out[:, j]).all():  # NaN (missing), inf, or past float32
                return None
    return x, y


def _finish(table: Table, name: str | None) -> Parsed:
    """Plain numbers go the numeric way (the same file and sha256 as a JSON x/y upload)."""
    if is_plain_numeric(table):
        x, y = as_matrices(table)
        return x, y, {"name": name, "feature_names": table.feature_names,
                      "target_names": table.target_names}
    return Table(table.features, table.targets, name)


def _read_bytes(source: Source) -> bytes:
    return source if isinstance(source, bytes) else source.read_bytes()


@contextlib.contextmanager
def _open(source: Source) -> Iterator[IO[bytes]]:
    if isinstance(source, bytes):
        yield io.BytesIO(source)
    else:
        with open(source, "rb") as f:
            yield f


def _plain_reason(e: BaseException) -> str:
    """A reader's error as one plain line: no traceback, no 'Consider setting ...'."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = text.split(": Error {", 1)[0].split(" Error {", 1)[0]  # the reader's debug form
    return text if len(text) <= 200 else text[:197] + "..."


def _read_binary(source: Source, media: Media) -> pl.DataFrame:
    import polars as pl

    src: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        if media == "parquet":
            return pl.read_parquet(src)
        if media == "arrow":
            return pl.read_ipc_stream(src)
        if media == "arrow-file":
            return pl.read_ipc(src)
        return pl.read_ndjson(src, infer_schema_length=None)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError,
            ValueError) as e:
        # a panic (a BaseException) in the reader is input it cannot take, not a bug of ours
        raise InvalidInput(f"the {_FORMAT_NAMES[media]} body could not be read: "
                           f"{_plain_reason(e)}") from None


def _roles(columns: list[str], targets: list[str], features: list[str] | None,
           where: str, hint: str = "") -> tuple[list[str], list[str]]:
    if not targets:
        raise InvalidInput("name the target column(s): ?target=y (repeat or comma-separate)",
                           field="target")
    missing = [t for t in targets if t not in columns]
    if missing:
        raise InvalidInput(f"target column(s) {', '.join(map(repr, missing))} not in {where} "
                           f"({', '.join(columns)}){hint}", field="target")
    if features:
        absent = [f for f in features if f not in columns]
        if absent:
            raise InvalidInput(f"feature column(s) {', '.join(map(repr, absent))} not in "
                               f"{where} ({', '.join(columns)})", field="features")
    else:
        features = [c for c in columns if c not in targets]
    if not features:
        raise InvalidInput(f"the data has no feature columns besides the target(s){hint}",
                           field="features")
    if set(features) & set(targets):
        raise InvalidInput("a column cannot be both a feature and a target", field="features")
    return features, targets


# ------------------------------------------------------------------ JSON


_JSON_FIELDS = ("name", "x", "y", "feature_names", "target_names")
_TABLE_FIELDS = ("name", "rows", "columns", "target", "features", "schema")


def _names(given: Any, count: int, prefix: str, field: str) -> list[str]:
    if given is None:
        return [f"{prefix}{i}" for i in range(count)]
    if not isinstance(given, list) or not all(isinstance(n, str) and n for n in given):
        raise InvalidInput(f"{field} must be a list of non-empty strings", field=field)
    if len(given) != count:
        raise InvalidInput(f"{field} has {len(given)} names for {count} columns", field=field)
    if len(set(given)) != len(given):
        raise InvalidInput(f"{field} has duplicate names", field=field)
    return list(given)


def _check_name(name: Any) -> str | None:
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise InvalidInput("name must be a string of at most 200 characters", field="name")
    return name


def from_json(body: Any) -> Numeric:
    """``{"name"?, "x", "y", "feature_names"?, "target_names"?}`` -> (x, y, descriptors)."""
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object: {"x": [[...]], "y": [[...]]}')
    unknown = set(body) - set(_JSON_FIELDS)
    if unknown:
        raise InvalidInput(unknown_field_message(unknown, _JSON_FIELDS),
                           field=sorted(unknown)[0])
    for key in ("x", "y"):
        if key not in body:
            raise InvalidInput(f"{key} is required", field=key)
    name = _check_name(body.get("name"))
    x = as_matrix(body["x"], "x")
    y = as_matrix(body["y"], "y")
    check_xy(x, y)
    return x, y, {
        "name": name,
        "feature_names": _names(body.get("feature_names"), x.shape[1], "x", "feature_names"),
        "target_names": _names(body.get("target_names"), y.shape[1], "y", "target_names"),
    }


def _from_json_body(raw: bytes, max_categories: int) -> Parsed:
    body = decode_json(raw)
    if isinstance(body, dict) and ("rows" in body or "columns" in body) and "x" not in body:
        return from_records(body, max_categories)
    return from_json(body)


def _name_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise InvalidInput(f"{field} must be a column name or a list of them", field=field)
    return list(values)


def from_records(body: dict[str, Any], max_categories: int) -> Parsed:
    """``{"rows": [{...}, ...]}`` or ``{"columns": {"a": [...]}}``, with ``target``, and
    optionally ``features``, ``schema`` and ``name``."""
    import polars as pl

    unknown = set(body) - set(_TABLE_FIELDS)
    if unknown:
        raise InvalidInput(unknown_field_message(unknown, _TABLE_FIELDS),
                           field=sorted(unknown)[0])
    if "rows" in body and "columns" in body:
        raise InvalidInput("send rows or columns, not both", field="columns")
    name = _check_name(body.get("name"))
    schema = parse_schema(body.get("schema"))
    targets = _name_list(body.get("target"), "target")
    features = _name_list(body.get("features"), "features") or None
    if "rows" in body:
        rows = body["rows"]
        if not isinstance(rows, list) or not rows:
            raise InvalidInput('rows must be a non-empty list of objects: [{"a": 1, ...}]',
                               field="rows")
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise InvalidInput(f"rows[{i}] is not an object: {str(r)[:40]}", field="rows")
        columns: list[str] = list(dict.fromkeys(k for r in rows for k in r))
        try:
            frame = pl.from_dicts(rows, schema=columns, infer_schema_length=None, strict=False)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise InvalidInput(f"rows could not be read: {_plain_reason(e)}",
                               field="rows") from None
        origin = Origin(lambda row, col: f"rows[{row}] field {col!r}",
                        how_to_declare='"schema": {{"{name}": "categorical"}}')
    else:
        cols = body["columns"]
        if not isinstance(cols, dict) or not cols:
            raise InvalidInput('columns must be an object of lists: {"a": [1, 2], ...}',
                               field="columns")
        lengths = {}
        for k, v in cols.items():
            if not isinstance(v, list):
                raise InvalidInput(f"columns[{k!r}] is not a list", field="columns")
            lengths[k] = len(v)
        first = next(iter(lengths))
        for k, n in lengths.items():
            if n != lengths[first]:
                raise InvalidInput(f"columns[{k!r}] has {n} values, columns[{first!r}] has "
                                   f"{lengths[first]}", field="columns")
        if not lengths[first]:
            raise InvalidInput("columns are empty: send at least one row", field="columns")
        try:
            frame = pl.DataFrame(cols, strict=False)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise InvalidInput(f"columns could not be read: {_plain_reason(e)}",
                               field="columns") from None
        columns = list(frame.columns)
        origin = Origin(lambda row, col: f"columns[{col!r}][{row}]",
                        how_to_declare='"schema": {{"{name}": "categorical"}}')
    feats, targs = _roles(columns, targets, features, "the columns")
    if not targets:
        raise InvalidInput('name the target column(s): "target": "price"', field="target")
    return _finish(frame_columns(frame, feats, targs, schema, origin, max_categories), name)


# ------------------------------------------------------------------ CSV

_DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs"}


def _delimiter(header_line: str) -> str:
    """The header's separator: commas, or semicolons or tabs (Excel in many locales saves
    "CSV" with semicolons) when the header has more of those. Read once, from the header."""
    counts = [header_line.count(d) for d in _DELIMITERS]
    return _DELIMITERS[counts.index(max(counts))] if max(counts) else ","


def _csv_where(header: list[str]) -> Origin:
    col = {h: i for i, h in enumerate(header)}
    return Origin(lambda row, name: f"CSV line {row + 2} column {col[name] + 1}")


def _from_csv(source: Source, targets: list[str], features: list[str] | None,
              name: str | None, schema: dict[str, ColumnKind],
              max_categories: int) -> Parsed:
    """A CSV with a header row, its columns separated by commas, semicolons or tabs;
    ``targets`` name the target columns, the rest are features."""
    if not targets:
        raise InvalidInput("name the target column(s): ?target=y (repeat or comma-separate)",
                           field="target")
    with _open(source) as f:
        start = f.read(1 << 20)
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would otherwise
    # stick, invisibly, to the first column's name
    text_start = start.decode("utf-8-sig", errors="replace")
    header_line = text_start.splitlines()[0] if text_start.strip() else ""
    delimiter = _delimiter(header_line)
    header = [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter), [])]
    if not header or not any(header):
        raise InvalidInput("the CSV is empty: send a header row and at least one data row")
    if len(set(header)) != len(header):
        raise InvalidInput("the CSV header has duplicate column names")
    one_column = ("; the header is one column: separate the columns with commas "
                  "(semicolons and tabs are read too)" if len(header) == 1 else "")
    features, targets = _roles(header, targets, features, "the CSV header", one_column)
    header_end = start.find(b"\n") + 1
    if header_end == 0 or not start[header_end:].strip() and len(start) < (1 << 20):
        raise InvalidInput("the CSV has a header but no data rows")
    if all(schema.get(c, "numeric") == "numeric" for c in header):
        matrices = _numeric_csv(source, header_end, header, delimiter, features, targets)
        if matrices is not None:
            return (*matrices, {"name": name, "feature_names": features,
                                "target_names": targets})
    frame = _read_csv_frame(source, header, delimiter)
    origin = _csv_where(header)
    return _finish(frame_columns(frame, features, targets, schema, origin, max_categories),
                   name)


def _blocks(source: Source, offset: int) -> Iterator[bytes]:
    """The file from ``offset`` in pieces that end at a line's end."""
    with _open(source) as f:
        f.seek(offset)
        rest = b""
        while True:
            block = f.read(_BLOCK)
            if not block:
                if rest.strip():
                    yield rest
                return
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            rest = data[cut:]
            yield data[:cut]


def _numeric_csv(source: Source, offset: int, header: list[str], delimiter: str,
                 features: list[str], targets: list[str]
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """Every cell a number: (x, y) float32, read a block of lines at a time straight into
    matrices sized by a count of the lines (pages past the last row are never touched);
    None when a block holds anything else (quotes, blanks, text, a ragged line): the
    general reader then reads the file and names the problem."""
    import polars as pl

    width = len(header)
    chosen = features + targets
    lines = sum(block.count(b"\n") + 1 for block in _blocks(source, offset))
    x = np.empty((lines, len(features)), dtype=np.float32)
    y = np.empty((lines, len(targets)), dtype=np.float32)
    at = 0
    line = 2
    for data in _blocks(source, offset):
        if b'"' in data:  # a quoted cell may hold a line break: blocks cannot be cut by line
            return None
        try:
            frame = pl.read_csv(data, has_header=False, new_columns=header,
                                separator=delimiter, schema_overrides=[pl.Float32] * width)
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError):
            return None
        if frame.width != width or frame.null_count().sum_horizontal().item() > 0:
            return None
        part = frame.select(chosen).to_numpy()
        del frame
        if not np.isfinite(part).all():
            row, c = np.argwhere(~np.isfinite(part))[0]
            raise InvalidInput(f"CSV line {line + row} column {header.index(chosen[c]) + 1} "
                               f"is not a finite number ({part[row, c]})")
        if at + len(part) > lines:  # cannot be (a row per line at most), but never overrun
            return None
        x[at : at + len(part)] = part[:, : len(features)]
        y[at : at + len(part)] = part[:, len(features) :]
        at += len(part)
        line += data.count(b"\n")
    if not at:
        raise InvalidInput("the CSV has a header but no data rows")
    # a view of the first rows: C-contiguous, and what was never written is never paged in
    return x[:at], y[:at]


def _read_csv_frame(source: Source, header: list[str], delimiter: str) -> pl.DataFrame:
    import polars as pl

    src: Any = source if isinstance(source, bytes) else str(source)
    common: dict[str, Any] = dict(has_header=True, new_columns=header, separator=delimiter,
                                  null_values=NULLS, encoding="utf8-lossy")
    errors = (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError)
    frame = None
    try:
        frame = pl.read_csv(src, infer_schema_length=10_000, **common)
    except errors:  # a later row does not fit the type inferred: every column as text
        try:
            frame = pl.read_csv(src, infer_schema=False, **common)
        except errors as e:
            reason = _plain_reason(e)
            raise _ragged_line(source, len(header), delimiter) or InvalidInput(
                f"the CSV could not be read: {reason}") from None
    if frame.width != len(header):
        raise _ragged_line(source, len(header), delimiter) or InvalidInput(
            "the CSV could not be read: its rows do not match its header")
    if frame.null_count().sum_horizontal().item() > 0:  # blanks, or a short line
        ragged = _ragged_line(source, len(header), delimiter)
        if ragged is not None:
            raise ragged
    return frame


def _ragged_line(source: Source, width: int, delimiter: str) -> InvalidInput | None:
    """The first line whose cell count is not the header's (csv module: exact, slower)."""
    separated = f" (the header's columns are separated by {_DELIMITER_NAMES[delimiter]})"
    with _open(source) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        try:
            next(reader, None)
            for cells in reader:
                if not cells:
                    continue
                if len(cells) != width:
                    return InvalidInput(
                        f"CSV line {reader.line_num} has {len(cells)} "
                        f"cell{'' if len(cells) == 1 else 's'}; the header has {width}"
                        f"{separated if len(cells) == 1 or delimiter != ',' else ''}")
        except csv.Error:  # a cell past the csv module's field limit (128 KiB)
            return InvalidInput(f"CSV line {reader.line_num + 1} has a cell of more than "
                                f"{csv.field_size_limit()} characters")
    return None
