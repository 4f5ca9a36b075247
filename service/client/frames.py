"""Tables in the client's calls: a pandas or polars DataFrame, or a file named by its
extension, as an upload body; a DataFrame or records as a predict body by name. Neither
pandas nor polars is required: they are used only when the caller hands one in."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"
NDJSON = "application/x-ndjson"

BY_EXTENSION = {".csv": CSV, ".tsv": CSV, ".txt": CSV, ".parquet": PARQUET, ".pq": PARQUET,
                ".arrows": ARROW_STREAM, ".arrow": ARROW_FILE, ".feather": ARROW_FILE,
                ".ipc": ARROW_FILE, ".ndjson": NDJSON, ".jsonl": NDJSON}


def _kind(obj: Any) -> str | None:
    """``polars`` or ``pandas`` for their DataFrames (by module: neither is imported)."""
    module = type(obj).__module__.split(".", 1)[0]
    if type(obj).__name__ == "DataFrame" and module in ("polars", "pandas"):
        return module
    return None


def is_frame(obj: Any) -> bool:
    return _kind(obj) is not None


def file_media(path: Path) -> str:
    media = BY_EXTENSION.get(path.suffix.lower())
    if media is None:
        raise ValueError(f"{path.name}: upload .csv, .parquet, .arrow (.arrows for a stream), "
                         ".feather or .ndjson files, or a .json body with upload()")
    return media


def frame_body(frame: Any) -> tuple[bytes, str]:
    """A DataFrame as (body, content type): an Arrow IPC stream (polars, or pandas with
    pyarrow installed), else CSV (pandas alone)."""
    buf = io.BytesIO()
    if _kind(frame) == "polars":
        frame.write_ipc_stream(buf)
        return buf.getvalue(), ARROW_STREAM
    try:
        import pyarrow as pa  # type: ignore[import-not-found,unused-ignore]

        table = pa.Table.from_pandas(frame, preserve_index=False)
        with pa.ipc.new_stream(buf, table.schema) as writer:
            writer.write_table(table)
        return buf.getvalue(), ARROW_STREAM
    except ImportError:  # (polars' from_pandas needs pyarrow too)
        return frame.to_csv(index=False).encode(), CSV


def _cell(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, str | bytes):  # a numpy scalar
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None  # a missing value (NaN is not JSON)
    return v


def predict_body(x: Any) -> dict[str, Any]:
    """``x`` as a predict body: a DataFrame or a dict of lists as ``columns``, a list of
    dicts as ``rows``, anything else (a matrix) as ``x``."""
    kind = _kind(x)
    if kind == "polars":
        x = x.to_dict(as_series=False)
    elif kind == "pandas":
        x = {str(k): x[k].tolist() for k in x.columns}
    if isinstance(x, dict):
        return {"columns": {k: [_cell(v) for v in vs] for k, vs in x.items()}}
    if isinstance(x, list) and x and all(isinstance(r, dict) for r in x):
        return {"rows": [{k: _cell(v) for k, v in r.items()} for r in x]}
    return {"x": x}
