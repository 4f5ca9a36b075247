"""Dataset uploads: JSON rows or CSV -> validated float32 arrays -> stored once by content."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from service.config import Settings
from service.data.arrays import as_matrix, check_xy, decode_json
from service.errors import (
    InsufficientStorage,
    InvalidInput,
    LimitExceeded,
    StorageUnavailable,
    is_disk_full,
    unknown_field_message,
)
from service.store.artifacts import ArtifactStore
from service.store.idempotency import Replay, idempotent
from service.store.metadata import MetadataStore
from service.store.tables import DatasetRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def check_table(settings: Settings, rows: int, features: int, targets: int) -> None:
    if rows > settings.max_rows:
        raise LimitExceeded(f"{rows} rows exceed the limit of {settings.max_rows} "
                            "(FITSERVE_MAX_ROWS)", field="x")
    for what, count in (("feature", features), ("target", targets)):
        if count > settings.max_features:
            raise LimitExceeded(f"{count} {what} columns exceed the limit of "
                                f"{settings.max_features} (FITSERVE_MAX_FEATURES)",
                                field="x" if what == "feature" else "y")


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


_JSON_FIELDS = ("name", "x", "y", "feature_names", "target_names")


def from_json(body: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
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
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise InvalidInput("name must be a string of at most 200 characters", field="name")
    x = as_matrix(body["x"], "x")
    y = as_matrix(body["y"], "y")
    check_xy(x, y)
    return x, y, {
        "name": name,
        "feature_names": _names(body.get("feature_names"), x.shape[1], "x", "feature_names"),
        "target_names": _names(body.get("target_names"), y.shape[1], "y", "target_names"),
    }


_DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs"}


def _delimiter(header_line: str) -> str:
    """The header's separator: commas, or semicolons or tabs (Excel in many locales saves
    "CSV" with semicolons) when the header has more of those. Read once, from the header."""
    counts = [header_line.count(d) for d in _DELIMITERS]
    return _DELIMITERS[counts.index(max(counts))] if max(counts) else ","


def from_csv(
    body: bytes, targets: list[str], features: list[str] | None, name: str | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A CSV with a header row, its columns separated by commas, semicolons or tabs;
    ``targets`` name the target columns, the rest are features."""
    if not targets:
        raise InvalidInput("name the target column(s): ?target=y (repeat or comma-separate)",
                           field="target")
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would otherwise
    # stick, invisibly, to the first column's name
    text_start = body[:65536].decode("utf-8-sig", errors="replace")
    header_line = text_start.splitlines()[0] if text_start.strip() else ""
    delimiter = _delimiter(header_line)
    header = next(csv.reader([header_line], delimiter=delimiter), [])
    header = [h.strip() for h in header]
    if not header or not any(header):
        raise InvalidInput("the CSV is empty: send a header row and at least one data row")
    if len(set(header)) != len(header):
        raise InvalidInput("the CSV header has duplicate column names")
    one_column = ("; the header is one column: separate the columns with commas "
                  "(semicolons and tabs are read too)" if len(header) == 1 else "")
    missing = [t for t in targets if t not in header]
    if missing:
        raise InvalidInput(
            f"target column(s) {', '.join(map(repr, missing))} not in the CSV header "
            f"({', '.join(header)}){one_column}",
            field="target",
        )
    if features:
        absent = [f for f in features if f not in header]
        if absent:
            raise InvalidInput(f"feature column(s) {', '.join(map(repr, absent))} not in the "
                               f"CSV header ({', '.join(header)})", field="features")
    else:
        features = [h for h in header if h not in targets]
    if not features:
        raise InvalidInput(f"the CSV has no feature columns besides the target(s){one_column}",
                           field="features")
    if set(features) & set(targets):
        raise InvalidInput("a column cannot be both a feature and a target", field="features")
    table = _parse_numbers(body, header, delimiter)
    col = {h: i for i, h in enumerate(header)}
    x = np.ascontiguousarray(table[:, [col[f] for f in features]])
    y = np.ascontiguousarray(table[:, [col[t] for t in targets]])
    return x, y, {"name": name, "feature_names": features, "target_names": targets}


def _parse_numbers(body: bytes, header: list[str], delimiter: str = ",") -> np.ndarray:
    """All cells as float32, parsed by polars' multithreaded reader; on any problem a slow
    pass with the csv module finds the line and column to name."""
    import polars as pl

    width = len(header)
    rest = body.split(b"\n", 1)[1] if b"\n" in body else b""
    if not rest.strip():
        raise InvalidInput("the CSV has a header but no data rows")
    try:
        frame = pl.read_csv(
            io.BytesIO(body),
            has_header=True,
            new_columns=header,
            separator=delimiter,
            schema_overrides=[pl.Float32] * width,
        )
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError):
        # a panic (a BaseException) in the reader is input it cannot take, not a bug of ours
        raise _find_bad_cell(body, width, delimiter) from None
    if frame.width != width or frame.null_count().sum_horizontal().item() > 0:
        raise _find_bad_cell(body, width, delimiter)
    table = np.ascontiguousarray(frame.to_numpy())
    if not np.isfinite(table).all():
        row, c = np.argwhere(~np.isfinite(table))[0]
        raise InvalidInput(
            f"CSV line {row + 2} column {c + 1} is not a finite number ({table[row, c]})"
        )
    return table


def _find_bad_cell(body: bytes, width: int, delimiter: str = ",") -> InvalidInput:
    text = io.StringIO(body.decode("utf-8", errors="replace"))
    reader = csv.reader(text, delimiter=delimiter)
    separated = f" (the header's columns are separated by {_DELIMITER_NAMES[delimiter]})"
    try:
        next(reader, None)
        for cells in reader:
            if not cells:
                continue
            line = reader.line_num
            if len(cells) != width:
                return InvalidInput(
                    f"CSV line {line} has {len(cells)} cell{'' if len(cells) == 1 else 's'}; "
                    f"the header has {width}"
                    f"{separated if len(cells) == 1 or delimiter != ',' else ''}")
            for c, cell in enumerate(cells, start=1):
                try:
                    float(cell)
                except ValueError:
                    return InvalidInput(f"CSV line {line} column {c} is not a number: "
                                        f"{_shown(cell)!r}{_decimal_hint(cell)}")
    except csv.Error:  # a cell past the csv module's field limit (128 KiB): no number
        return _oversized_cell(text.getvalue(), reader.line_num, delimiter)
    return InvalidInput("the CSV could not be read as numbers")


def _decimal_hint(cell: str) -> str:
    """A decimal comma (``1,5``, as semicolon-separated files from many locales have)."""
    try:
        number = float(cell.strip().replace(",", "."))
    except ValueError:
        return ""
    return f" (write decimals with a point: {number:g})" if "," in cell else ""


def _shown(cell: str) -> str:
    return cell if len(cell) <= 40 else cell[:37] + "..."


def _oversized_cell(text: str, line: int, delimiter: str = ",") -> InvalidInput:
    """The error for a cell the csv module refused as too long, on (physical) ``line``:
    the column is the first separated piece of that line past the limit."""
    start = 0
    for _ in range(line - 1):
        start = text.find("\n", start) + 1
    row_end = text.find("\n", start)
    row_end = len(text) if row_end < 0 else row_end
    limit = csv.field_size_limit()
    column = 1
    while True:  # no split: the line may be hundreds of megabytes
        comma = text.find(delimiter, start, row_end)
        if (comma if comma >= 0 else row_end) - start > limit or comma < 0:
            break
        start, column = comma + 1, column + 1
    return InvalidInput(f"CSV line {line} column {column} has a cell of more than {limit} "
                        f"characters: {_shown(text[start : start + 41])!r}")


def column_stats(x: np.ndarray, y: np.ndarray, features: list[str], targets: list[str]) -> list:
    out = []
    for role, arr, names in (("feature", x, features), ("target", y, targets)):
        mean = arr.mean(axis=0, dtype=np.float64)
        sq = np.zeros(arr.shape[1])
        for s in range(0, arr.shape[0], 1 << 16):  # float64 one block at a time
            dev = arr[s : s + (1 << 16)].astype(np.float64) - mean
            sq += np.einsum("ij,ij->j", dev, dev)
        std, lo, hi = np.sqrt(sq / arr.shape[0]), arr.min(0), arr.max(0)
        for i, n in enumerate(names):
            out.append({"name": n, "role": role, "mean": float(mean[i]), "std": float(std[i]),
                        "min": float(lo[i]), "max": float(hi[i])})
    return out


def content_sha256(
    x: np.ndarray, y: np.ndarray, feature_names: list[str], target_names: list[str]
) -> str:
    """The dataset's identity: shapes, names and float32 values (the safetensors file's own
    bytes are not canonical: its metadata order varies from one write to the next)."""
    h = hashlib.sha256()
    h.update(json.dumps([x.shape, y.shape, feature_names, target_names]).encode())
    h.update(np.ascontiguousarray(x, dtype="<f4").data)
    h.update(np.ascontiguousarray(y, dtype="<f4").data)
    return h.hexdigest()


def store_dataset(
    meta: MetadataStore,
    artifacts: ArtifactStore,
    x: np.ndarray,
    y: np.ndarray,
    info: dict[str, Any],
    tenant: str = "default",
    then: Callable[[Session, str, bool], None] | None = None,
) -> tuple[DatasetRow, bool]:
    """Write the arrays (once per content) and then the record; returns (row, created).
    ``then``: what commits with the record (see ``add_dataset``)."""
    check_xy(x, y)
    sha = content_sha256(x, y, info["feature_names"], info["target_names"])

    def ensure_file() -> None:
        if artifacts.has_dataset(sha):
            return
        try:
            artifacts.put_dataset(
                sha, artifacts.dataset_bytes(x, y, info["feature_names"], info["target_names"]))
        except OSError as e:  # read-only or full; the message names no path
            if is_disk_full(e):
                raise InsufficientStorage() from None
            raise StorageUnavailable(
                f"the dataset could not be stored ({e.strerror or type(e).__name__}); "
                "try again later", headers={"Retry-After": "30"}
            ) from None

    ensure_file()  # the file lands before any record can point at it
    try:
        row, created = meta.add_dataset(
            then,
            tenant=tenant,
            name=info.get("name"),
            sha256=sha,
            rows=int(x.shape[0]),
            features=int(x.shape[1]),
            targets=int(y.shape[1]),
            feature_names=info["feature_names"],
            target_names=info["target_names"],
            columns=column_stats(x, y, info["feature_names"], info["target_names"]),
            size_bytes=int(x.nbytes + y.nbytes),  # the float32 values
        )
    except Exception:  # not recorded (a full disk, the database away): leave no file
        with contextlib.suppress(Exception):  # else the sweep takes it later
            artifacts.discard_dataset(sha, lambda: meta.sha_in_use(sha))
        raise
    ensure_file()  # a delete of the last other record may have taken the file meanwhile
    return row, created


def upload_dataset(
    meta: MetadataStore, artifacts: ArtifactStore, settings: Settings, tenant: str, *,
    media: Literal["json", "csv"], body: bytes, target: list[str], features: list[str] | None,
    name: str | None, idempotency_key: str | None,
) -> tuple[DatasetRow, bool]:
    """Parse, check and store an upload (blocking: call it in a worker thread); returns the
    dataset and whether this request created it (False: the same content, or a replay)."""
    key_body = body + repr((target, features, name)).encode()  # the query is the request too
    with idempotent(meta, tenant, "datasets", idempotency_key, key_body,
                    reservation_s=settings.idempotency_reservation_s) as attempt:
        if isinstance(attempt, Replay):
            return meta.get_dataset(attempt.resource_id, tenant), attempt.status_code == 201
        if media == "json":
            x, y, info = from_json(decode_json(body))
        else:
            x, y, info = from_csv(body, target, features, name)
        check_table(settings, x.shape[0], x.shape[1], y.shape[1])
        stored, found = attempt.completion(201), attempt.completion(200)

        def then(s: Session, dataset_id: str, created: bool) -> None:
            # the key names the dataset in the transaction that records it: a retry after a
            # crash right after the commit answers as the first request would have (201)
            complete = stored if created else found
            if complete is not None:
                complete(s, dataset_id)

        row, created = store_dataset(meta, artifacts, x, y, info, tenant, then)
    return row, created


def delete_dataset(meta: MetadataStore, artifacts: ArtifactStore, dataset_id: str,
                   tenant: str, free_reserve: Callable[[], bool] = lambda: False) -> None:
    """Delete the record (409 while a queued or running job uses it), then its file unless
    another record shares the content. On a full disk the commit that frees space may
    itself need some: ``free_reserve`` gives the data directory's reserve up, and it is
    tried once more."""
    try:
        row = meta.delete_dataset(dataset_id, tenant)
    except Exception as e:
        if not is_disk_full(e) or not free_reserve():
            raise
        row = meta.delete_dataset(dataset_id, tenant)
    artifacts.discard_dataset(row.sha256, lambda: meta.sha_in_use(row.sha256))
