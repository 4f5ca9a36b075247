"""The Open Inference Protocol (KServe v2, Triton, MLServer) over the models we serve.

A model's protocol name is the ``model_name`` its job was given (the model id for an unnamed
one); its versions are the version numbers of that name, and the latest answers when no
version is asked for (or the version the name's traffic split draws). An alias is named as
``name@alias`` in the model name's place (``/v2/models/seed@champion/infer``), as on v1.

Each model has one input ``x`` of shape ``[-1, in_features]`` and one
output ``y`` of shape ``[-1, out_features]``; data may be sent as JSON (flat or nested) or as
raw little-endian bytes after the JSON (the protocol's binary tensor extension, which
tritonclient uses by default). Nothing here imports FastAPI: the /v2 routes and the ASGI
fast lane (service/api/middleware/predict_lane.py) both answer through ``infer_answer`` and
``error_answer``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from anyio import to_thread

from models.registry import get_kind
from service import __version__
from service.data.arrays import decode_json
from service.errors import InferenceError, InvalidInput, NotFound, ServiceError
from service.features.pipeline import Pipeline
from service.serving.predict import collector_paused
from service.serving.predictor import LoadedModel, Predictor
from service.serving.traffic import VERSION_HEADER
from service.store.metadata import MetadataStore
from service.store.tables import ModelRow

SERVER_NAME = "fitserve"
INPUT = "x"
OUTPUT = "y"
PROBABILITIES = "probabilities"
LABEL = "label"
"""A classifier trained on labels (text, numbers, booleans): each row's label, as BYTES."""
OUTPUTS = (OUTPUT, PROBABILITIES, LABEL)
DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_INT64 = np.dtype("<i8")
HEADER_LENGTH = "inference-header-content-length"
_COLUMN_DATATYPE = {"numeric": "FP32", "boolean": "BOOL", "categorical": "BYTES"}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    data: np.ndarray  # flat, as sent
    shape: tuple[int, ...]
    datatype: str
    binary_output: bool
    outputs: tuple[str, ...] | None = None  # asked for by name; None: all of them
    columns: dict[str, list[Any]] | None = None  # one input per column, by name


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]}


def version_number(version: str) -> int:
    """A version path segment as its number: ASCII digits, from 1 (``01`` is version 1, as
    Triton reads it). Every lookup goes through here, cached or not, so one request always
    gets one answer."""
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise NotFound(f"no version {version!r}: versions are numbers from 1")
    return int(version)


_EXAMPLE = ('{"name": "x", "shape": [N, features], "datatype": "FP32", '
            '"data": [...]}')


def _fail(message: str) -> InferenceError:
    return InferenceError(message)


@collector_paused  # a JSON tensor of n rows is n lists: see collector_paused
def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The JSON part (and binary tail, if any) of an infer request; nothing model-specific."""
    tail = b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise _fail(f"Inference-Header-Content-Length {header_length!r} is not a length "
                        f"within the body ({len(body)} bytes)")
        body, tail = body[:n], body[n:]
    req = decode_json(body)
    if not isinstance(req, dict):
        raise _fail('the request must be a JSON object: {"inputs": [...]}')
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _fail("id must be a string")
    inputs = req.get("inputs")
    if inputs is None:
        raise _fail(f"inputs is required: a list with one input tensor, {_EXAMPLE}")
    if not isinstance(inputs, list):
        raise _fail(f"inputs must be a list with one input tensor, {_EXAMPLE}")
    if not inputs:
        raise _fail(f"inputs needs at least one input tensor: [{_EXAMPLE}]")
    if set(map(type, inputs)) != {dict}:  # JSON objects are dicts, never a subclass
        raise _fail("each input must be an object with name, shape, datatype and data")
    binary, names = _outputs_asked(req)
    if len(inputs) > 1 or inputs[0].get("name") != INPUT or \
            inputs[0].get("datatype") in ("BYTES", "BOOL"):  # one input per column (a text
        # or boolean "x" is a column so named: the matrix is numbers)
        columns, rows = _column_inputs(inputs, tail)
        return InferRequest(rid, np.zeros(0, np.float32), (rows,), "FP32", binary, names,
                            columns)
    tensor = inputs[0]
    shape = tensor.get("shape")
    if type(shape) is not list or not shape or set(map(type, shape)) != {int} or min(shape) < 0:
        raise _fail(f"input {INPUT!r}: shape must be a list of non-negative integers")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise _fail(f"input {INPUT!r}: datatype {datatype!r} is not supported; send FP32 or FP64")
    dtype = DATATYPES[datatype]
    count = math.prod(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise _fail(f"input {INPUT!r}: parameters must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != len(tail):
            raise _fail(f"input {INPUT!r}: binary_data_size {size!r} does not match the "
                        f"{len(tail)} bytes after the JSON header")
        if size != count * dtype.itemsize:
            raise _fail(f"input {INPUT!r}: shape {shape} of {datatype} needs "
                        f"{count * dtype.itemsize} bytes, got {size}")
        data = np.frombuffer(tail, dtype=dtype)
    elif _few_floats(values := tensor.get("data"), count, dtype):
        # each float rounded once to the datatype, as the astype below; none past its range
        data = np.array(values, dtype)
        return InferRequest(rid, data, tuple(shape), datatype, binary, names)
    else:
        if "data" not in tensor:
            raise _fail(f"input {INPUT!r}: data is required")
        try:
            data = np.asarray(tensor["data"])
        except ValueError:
            raise _fail(f"input {INPUT!r}: data is ragged; give rows of equal length or a "
                        "flat list") from None
        if data.dtype.kind not in "iuf" or (data.size == 0 and count != 0):
            raise _fail(f"input {INPUT!r}: data must be numbers")
        with np.errstate(over="ignore"):  # past FP32's range: inf, refused below
            data = data.astype(dtype).ravel()
        if data.size != count:
            raise _fail(f"input {INPUT!r}: shape {shape} needs {count} values, data has "
                        f"{data.size}")
    if not np.isfinite(data).all():
        raise _fail(f"input {INPUT!r}: data must be finite numbers")
    return InferRequest(rid, data, tuple(shape), datatype, binary, names)


_FEW = 16
_FP32_INF = float.fromhex("0x1.ffffffp127")
"""The least float that rounds to inf in float32 (halfway from its largest to 2**128)."""


def _few_floats(values: Any, count: int, dtype: np.dtype[Any]) -> bool:
    """A flat list of up to _FEW floats, ``count`` of them, each finite in ``dtype``: numpy
    reads it as the general path does (a list of floats is float64, then astype), with
    fewer calls (a one-row request's numpy calls cost more than its prediction)."""
    return (type(values) is list and 0 < len(values) == count <= _FEW
            and set(map(type, values)) == {float}
            and max(map(abs, values)) < (_FP32_INF if dtype.itemsize == 4 else math.inf))


def _outputs_asked(req: dict[str, Any]) -> tuple[bool, tuple[str, ...] | None]:
    """(binary output?, the outputs asked for by name, None: all)."""
    binary = bool((req.get("parameters") or {}).get("binary_data_output", False))
    outputs = req.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise _fail("outputs must be a list of objects with a name")
        for o in outputs:
            if o.get("name") not in OUTPUTS:
                raise _fail(f"unknown output {o.get('name')!r}; models have {OUTPUT!r}, "
                            f"classifiers {PROBABILITIES!r} and, trained on labels, {LABEL!r}")
            binary = bool((o.get("parameters") or {}).get("binary_data", binary))
    return binary, None if outputs is None else tuple(o["name"] for o in outputs)


_COLUMN_TYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "BOOL": np.dtype("?")}


def _column_inputs(inputs: list[dict[str, Any]], tail: bytes
                   ) -> tuple[dict[str, list[Any]], int]:
    """One input per column (issue 12): each of shape [N] or [N, 1], numbers (FP32, FP64,
    INT32, INT64), BOOL or BYTES (text, UTF-8), in JSON or in the binary tail (in input
    order; BYTES as 4-byte little-endian lengths before each string, as tritonclient
    writes them). A NaN number is a missing value."""
    columns: dict[str, list[Any]] = {}
    rows = -1
    offset = 0
    for tensor in inputs:
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise _fail("each input needs a name: the column it holds")
        if name in columns:
            raise _fail(f"input {name!r} is given twice")
        shape = tensor.get("shape")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                           for d in shape) or (len(shape) == 2 and shape[1] != 1)):
            raise _fail(f"input {name!r}: a column's shape is [N] or [N, 1]")
        datatype = tensor.get("datatype")
        if datatype != "BYTES" and datatype not in _COLUMN_TYPES:
            raise _fail(f"input {name!r}: datatype {datatype!r} is not supported; send "
                        "FP32, FP64, INT32, INT64, BOOL or BYTES")
        n = shape[0]
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(tail):
                raise _fail(f"input {name!r}: binary_data_size {size!r} runs past the "
                            f"{len(tail)} bytes after the JSON header")
            chunk, offset = tail[offset : offset + size], offset + size
            values = (_bytes_elements(name, chunk) if datatype == "BYTES" else
                      _binary_numbers(name, chunk, _COLUMN_TYPES[datatype]))
        else:
            data = tensor.get("data")
            if not isinstance(data, list):
                raise _fail(f"input {name!r}: data is required, a list of values")
            values = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
        if len(values) != n:
            raise _fail(f"input {name!r}: shape {shape} needs {n} values, data has "
                        f"{len(values)}")
        if rows >= 0 and n != rows:
            raise _fail(f"input {name!r} has {n} rows; the inputs before it have {rows}")
        rows = n
        columns[name] = values
    return columns, rows


def _binary_numbers(name: str, chunk: bytes, dtype: np.dtype[Any]) -> list[Any]:
    if len(chunk) % dtype.itemsize:
        raise _fail(f"input {name!r}: {len(chunk)} bytes are not whole {dtype.name} values")
    arr = np.frombuffer(chunk, dtype)
    if dtype.kind == "f":
        return [None if v != v else v for v in arr.tolist()]  # NaN: missing
    return arr.tolist()


def _bytes_elements(name: str, chunk: bytes) -> list[Any]:
    out: list[Any] = []
    at = 0
    while at < len(chunk):
        if at + 4 > len(chunk):
            raise _fail(f"input {name!r}: a BYTES element's 4-byte length is cut short")
        n = int.from_bytes(chunk[at : at + 4], "little")
        if at + 4 + n > len(chunk):
            raise _fail(f"input {name!r}: a BYTES element runs past its data")
        try:
            out.append(chunk[at + 4 : at + 4 + n].decode())
        except UnicodeDecodeError:
            raise _fail(f"input {name!r}: BYTES elements must be UTF-8 text") from None
        at += 4 + n
    return out


def _outputs_metadata(row: ModelRow) -> list[dict[str, Any]]:
    if get_kind(row.kind).task != "classification":
        return [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, row.out_features]}]
    classes = (row.config or {}).get("classes", 2)
    return [{"name": OUTPUT, "datatype": "INT64", "shape": [-1, 1]},
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, classes]}]


class InferenceProtocol:
    """Resolves protocol names and versions to models, and runs infer requests."""

    def __init__(self, meta: MetadataStore, predictor: Predictor) -> None:
        self.meta = meta
        self.predictor = predictor
        # (tenant, name, version) -> model id: a version, once made, never changes
        self._versions: dict[tuple[str, str, int], str] = {}

    # ------------------------------------------------------------ metadata (blocking)

    def _row(self, name: str, version: str | None, tenant: str) -> ModelRow:
        if version is None:  # a name, an id, or name@alias / name@3
            return self.meta.resolve_model(name, tenant)
        number = version_number(version)
        row = self.meta.find_model_version(name, number, tenant)
        return row

    def model_metadata(self, name: str, version: str | None, tenant: str) -> dict[str, Any]:
        row = self._row(name, version, tenant)
        versions = self.meta.model_versions(row.name, tenant) if row.name else []
        parameters: dict[str, Any] = {"model_id": row.id, "feature_names": row.feature_names,
                                      "target_names": row.target_names}
        inputs = [{"name": INPUT, "datatype": "FP32", "shape": [-1, row.in_features]}]
        pipeline = self._pipeline(row, tenant)
        if pipeline is not None and not pipeline.identity:  # one input per column
            inputs = [{"name": c.name, "datatype": _COLUMN_DATATYPE[c.kind], "shape": [-1]}
                      for c in pipeline.inputs]
            parameters["matrix_input"] = {"name": INPUT, "datatype": "FP32",
                                          "shape": [-1, row.in_features]}
            if pipeline.labels is not None:
                parameters["labels"] = list(pipeline.labels)
        outputs = _outputs_metadata(row)
        if pipeline is not None and pipeline.labels is not None:
            outputs.append({"name": LABEL, "datatype": "BYTES", "shape": [-1, 1]})
        return {
            "name": name,
            "versions": [str(v) for v in versions],
            "platform": f"pytorch_{row.kind}",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": parameters,
        }

    def _pipeline(self, row: ModelRow, tenant: str) -> Pipeline | None:
        """The model's feature pipeline, from its checkpoint (None when it cannot be read:
        the metadata still answers)."""
        try:
            return self.predictor.load(row.id, tenant).pipeline
        except ServiceError:
            return None

    def model_ready(self, name: str, version: str | None, tenant: str) -> dict[str, Any]:
        self.load(name, version, tenant)  # ready means loadable: checkpoint read and verified
        return {"name": name, "ready": True}

    # ------------------------------------------------------------ serving

    def cached(self, name: str, version: str | None, tenant: str,
               route_key: str | None = None) -> LoadedModel | None:
        """The model if it is in memory; no I/O. (A name's traffic split applies when no
        version is asked for.)"""
        if version is None:
            return self.predictor.cached(name, tenant, route_key)
        try:
            model_id = self._versions.get((tenant, name, version_number(version)))
        except NotFound:
            return None  # load says why
        return None if model_id is None else self.predictor.cached(model_id, tenant)

    def load(self, name: str, version: str | None, tenant: str,
             route_key: str | None = None) -> LoadedModel:
        """Resolve and load (blocking: metadata store and disk)."""
        if version is None:
            return self.predictor.load(name, tenant, route_key)
        row = self._row(name, version, tenant)
        self._versions[(tenant, name, version_number(version))] = row.id
        return self.predictor.load(row.id, tenant)

    def infer(
        self, model: LoadedModel, name: str, req: InferRequest
    ) -> tuple[dict[str, Any], bytes | None]:
        """The response's JSON part, and its binary tail when binary output was asked for."""
        if req.columns is not None:
            names = model.pipeline.input_names if model.pipeline is not None else []
            unknown = sorted(set(req.columns) - set(names))
            if list(req.columns) == [INPUT] and (  # text or booleans sent as the matrix
                    unknown or model.pipeline is None or model.pipeline.identity):
                raise _fail(f"input {INPUT!r}: this model's x is a matrix of numbers, shape "
                            f"[N, {model.in_features}]; send FP32 or FP64")
            if unknown:
                per_column = f" or one input per column: {', '.join(names)}" if names else ""
                raise _fail(f"unexpected input {unknown[0]!r}; this model's input is "
                            f"{INPUT!r} (shape [N, {model.in_features}]){per_column}")
            x = model.matrix(req.columns, req.shape[0], "inputs")
        elif model.pipeline is not None and not model.pipeline.identity and \
                INPUT in model.pipeline.input_names and req.shape[1:] in ((), (1,)):
            # the model has a column named as the matrix input: a lone "x" of one value a
            # row is that column (its other columns imputed), not the encoded matrix
            x = model.matrix({INPUT: req.data.tolist()}, req.shape[0], "inputs")
        elif len(req.shape) == 2:
            x = req.data.reshape(req.shape)
        elif len(req.shape) == 1 and model.in_features == 1:
            x = req.data.reshape(-1, 1)  # a flat batch of one-feature rows
        else:
            raise _fail(f"input {INPUT!r}: shape must be [N, {model.in_features}] for "
                        f"{model.expects()}, got {list(req.shape)}")
        if req.columns is None and x.shape[1] != model.in_features:
            raise InvalidInput(
                f"input {INPUT!r}: model {name!r} expects {model.expects()}, got shape "
                f"{list(req.shape)}; send shape [N, {model.in_features}]"
            )
        p = model.infer(np.ascontiguousarray(x, dtype=np.float32))
        self.predictor.answered(model, len(p.y))
        values = {OUTPUT: p.y if p.labels is None else p.labels[:, None]}
        if p.probabilities is not None:
            values[PROBABILITIES] = p.probabilities
        if model.label_keys is not None and p.labels is not None:  # the classes' own labels
            values[LABEL] = np.array(model.label_keys, dtype=object)[p.labels][:, None]
        wanted = req.outputs or values
        missing = [n for n in wanted if n not in values] if req.outputs else None
        if missing:
            raise _fail(f"model {name!r} has no output {missing[0]!r}; its outputs are "
                        f"{', '.join(values)}")
        tensors, tails = [], []
        for out_name in wanted:
            v = values[out_name]
            shape = [*v.shape]  # (N, k): Python ints
            data: Any
            kind = v.dtype.kind
            if kind == "O":  # BYTES: UTF-8 text, each 4-byte-length-prefixed in binary
                dtype, texts = "BYTES", [str(t) for t in v.ravel().tolist()]
                blob = b"".join(len(b).to_bytes(4, "little") + b
                                for b in (t.encode() for t in texts))
                data = texts
            else:
                dtype = "INT64" if kind == "i" else req.datatype
                data = v.astype(DATATYPES.get(dtype, _INT64), copy=False).ravel()
                blob = data.tobytes() if req.binary_output else b""
            tensor: dict[str, Any] = {"name": out_name, "datatype": dtype, "shape": shape}
            if req.binary_output:
                tails.append(blob)
                tensor["parameters"] = {"binary_data_size": len(blob)}
            else:
                tensor["data"] = data
            tensors.append(tensor)
        tail = b"".join(tails) if req.binary_output else None
        response: dict[str, Any] = {"model_name": name, "outputs": tensors}
        if model.version is not None:
            response["model_version"] = str(model.version)
        if req.id is not None:
            response["id"] = req.id
        return response, tail

    @staticmethod
    def encode(response: dict[str, Any], tail: bytes | None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of an infer response."""
        head = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
        if tail is None:
            return head, {}
        return head + tail, {HEADER_LENGTH_NAME: str(len(head))}


JSON_MEDIA = "application/json"
BINARY_MEDIA = "application/octet-stream"


async def infer_answer(
    inference: InferenceProtocol, name: str, version: str | None, tenant: str, body: bytes,
    header_length: str | None, route_key: str | None = None,
) -> tuple[bytes, str, dict[str, str]]:
    """An infer request's answer: body, media type and headers (the model loaded off the
    event loop on first use). Raises ServiceError; ``error_answer`` says how to answer it."""
    raw, binary, head_length, version_number = await infer_raw(
        inference, name, version, tenant, body, header_length, route_key)
    headers = {} if head_length is None else {HEADER_LENGTH_NAME: head_length.decode()}
    if version_number is not None:
        headers[VERSION_HEADER] = version_number.decode()
    return raw, BINARY_MEDIA if binary else JSON_MEDIA, headers


HEADER_LENGTH_NAME = "Inference-Header-Content-Length"


async def infer_raw(
    inference: InferenceProtocol, name: str, version: str | None, tenant: str, body: bytes,
    header_length: str | None, route_key: str | None = None,
) -> tuple[bytes, bool, bytes | None, bytes | None]:
    """``infer_answer`` as the ASGI lane writes it: the body, whether it has a binary tail,
    and the JSON head's length and the model's version as header values (None: no header)."""
    req = parse_infer_request(body, header_length)
    model = inference.cached(name, version, tenant, route_key)
    if model is None:  # first use: resolve and load off the event loop
        model = await to_thread.run_sync(inference.load, name, version, tenant, route_key)
    response, tail = inference.infer(model, name, req)
    head = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    number = None if model.version is None else str(model.version).encode()
    if tail is None:
        return head, False, None, number
    return head + tail, True, str(len(head)).encode(), number


def error_answer(e: ServiceError) -> tuple[int, dict[str, str], dict[str, str] | None]:
    """The protocol's answer to an error: status, ``{"error": message}`` and headers. 401,
    403, 404 and 5xx keep their status; any other client error is the protocol's 400."""
    status = e.status_code
    if status not in (401, 403, 404) and status < 500:
        status = 400  # the protocol's clients expect 400 for a bad request
    return status, {"error": e.message}, e.headers
