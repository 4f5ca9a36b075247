"""fitserve's checkpoint format, read back from a client: what ``POST /v1/models`` checks
before it stores anything. A model trained on one fitserve moves to another this way.

The file is a safetensors file as ``GET /v1/models/{id}/checkpoint`` gives it: float32
tensors by state_dict name, and string metadata (format, kind, config, feature and target
names, normalization). It is checked whole before anything is written: its sha256 against
the one the client sends, the safetensors layout, the format version, the kind and its
options (with the server's limits), every tensor's name, shape and finiteness against the
config, the names and the normalization. Nothing in it is ever executed or unpickled: the
header is JSON, the tensors raw bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load

from models.defaults import MLP_HIDDEN, POLYNOMIAL_DEGREE, POLYNOMIAL_INTERACTIONS
from models.registry import get_kind, kinds
from models.terms import term_count
from service.config import Settings
from service.errors import (
    InsufficientStorage,
    InvalidInput,
    StorageUnavailable,
    clip,
    is_disk_full,
)
from service.jobs.limits import check_model
from service.store.artifacts import ArtifactStore, sha256_hex
from service.store.metadata import MetadataStore
from service.store.tables import ModelRow, new_id
from service.training.reported import reported_linear
from service.training.spec import ModelSpec, TrainingSpec

FORMATS = ("fitserve/2",)
"""Checkpoint formats this server reads: worker/runner.py's CHECKPOINT_FORMAT (a test holds
them together; runner.py is not imported here, it brings torch)."""
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_HEADER = 1 << 24
_MODEL_SPEC: TypeAdapter[Any] = TypeAdapter(ModelSpec)


class InvalidCheckpoint(InvalidInput):
    """An uploaded checkpoint that is not a fitserve checkpoint this server can serve."""

    type = "invalid_checkpoint"


def expected_shapes(kind: str, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The state_dict a kind's module has for ``config``: each tensor's name and shape."""
    n_in, n_out = int(config["in_features"]), int(config["out_features"])
    bias = bool(config.get("bias", True))

    def linear(prefix: str, a: int, b: int) -> dict[str, tuple[int, ...]]:
        return {f"{prefix}.weight": (b, a), **({f"{prefix}.bias": (b,)} if bias else {})}

    if kind in ("linear", "logistic"):
        return linear("linear", n_in, n_out)
    if kind == "polynomial":
        width = term_count(n_in, int(config.get("degree", POLYNOMIAL_DEGREE)),
                           bool(config.get("interactions", POLYNOMIAL_INTERACTIONS)))
        return linear("linear", width, n_out)
    if kind == "mlp":
        sizes = [n_in, *(int(h) for h in config.get("hidden", MLP_HIDDEN)), n_out]
        out: dict[str, tuple[int, ...]] = {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            out.update(linear(f"layers.{2 * i}", a, b))
        return out
    raise KeyError(kind)


@dataclass(frozen=True)
class Checkpoint:
    """A checked checkpoint, ready to be stored."""

    kind: str
    config: dict[str, Any]  # with in_features and out_features
    spec: TrainingSpec  # the model's options as a job would name them
    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]
    feature_names: list[str]
    target_names: list[str]
    normalization: dict[str, Any] | None
    sha256: str


def _fail(message: str, field: str = "checkpoint") -> InvalidCheckpoint:
    return InvalidCheckpoint(message, field=field)


def _part(key: str) -> str:
    """The error's field for a part of the file: its metadata ``key``."""
    return f"checkpoint.{key}"


def _tensor(name: str) -> str:
    return f"checkpoint.tensors.{clip(name, 80)}"


_CONFIG, _NORM = _part("config"), _part("normalization")


def _header(blob: bytes) -> dict[str, Any]:
    """The safetensors header: an 8-byte little-endian length, then that much JSON."""
    if len(blob) < 8:
        raise _fail(f"not a safetensors file: {len(blob)} bytes")
    size = int.from_bytes(blob[:8], "little")
    if size > min(len(blob) - 8, _MAX_HEADER):
        raise _fail(f"not a safetensors file, or cut short: its header says {size} bytes, "
                    f"{len(blob) - 8} follow")
    try:
        header = json.loads(blob[8 : 8 + size])
    except (UnicodeDecodeError, ValueError):
        raise _fail("not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise _fail("not a safetensors file: its header is not a JSON object")
    return header


def _json(metadata: dict[str, str], key: str) -> Any:
    if key not in metadata:
        raise _fail(f"the metadata has no {key!r}: this is not a fitserve checkpoint",
                    _part(key))
    try:
        return json.loads(metadata[key])
    except ValueError:
        raise _fail(f"the metadata {key!r} is not JSON", _part(key)) from None


def _vector(norm: dict[str, Any], key: str, size: int, positive: bool = False) -> None:
    value = norm.get(key)
    if (not isinstance(value, list) or len(value) != size
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise _fail(f"normalization {key} must be {size} numbers", _NORM)
    arr = np.asarray(value, np.float64)
    if not np.isfinite(arr).all() or (positive and (arr <= 0).any()):
        raise _fail(f"normalization {key} must be finite"
                    f"{' and positive' if positive else ''}", _NORM)


def _normalization(value: Any, n_in: int, n_out: int, regression: bool
                   ) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"x_mean", "x_std", "y_mean", "y_std"}:
        raise _fail("normalization must be null or {x_mean, x_std, y_mean, y_std}", _NORM)
    _vector(value, "x_mean", n_in)
    _vector(value, "x_std", n_in, positive=True)
    if (value.get("y_mean") is None) != (value.get("y_std") is None):
        raise _fail("normalization has one of y_mean and y_std without the other", _NORM)
    if value.get("y_mean") is not None:
        if not regression:
            raise _fail("a classifier's normalization scales no targets (y_mean is set)",
                        _NORM)
        _vector(value, "y_mean", n_out)
        _vector(value, "y_std", n_out, positive=True)
    return {"x_mean": value["x_mean"], "x_std": value["x_std"],
            "y_mean": value.get("y_mean"), "y_std": value.get("y_std")}


def _names(value: Any, sizes: tuple[int, ...], key: str) -> list[str]:
    if (not isinstance(value, list) or not all(isinstance(n, str) and n for n in value)
            or len(set(value)) != len(value)):
        raise _fail(f"{key} must be a list of distinct non-empty names", _part(key))
    if len(value) not in sizes:
        want = " or ".join(str(s) for s in sizes)
        raise _fail(f"{key} has {len(value)} names; the config needs {want}", _part(key))
    return list(value)


def read_checkpoint(blob: bytes, sha256: str | None, settings: Settings) -> Checkpoint:
    """Check an uploaded checkpoint whole; raises InvalidCheckpoint naming what is wrong."""
    if not sha256:
        raise _fail("send the file's sha256 in the X-Checkpoint-SHA256 header (GET "
                    "/v1/models/{id}/checkpoint answers with it; sha256sum computes it)",
                    field="sha256")
    sha256 = sha256.strip().lower()
    if not _SHA_RE.match(sha256):
        raise _fail(f"X-Checkpoint-SHA256 {clip(sha256, 80)!r} is not 64 hex digits",
                    field="sha256")
    actual = sha256_hex(blob)
    if actual != sha256:
        raise _fail(f"the file's sha256 is {actual}, not the {sha256} sent: it was changed or "
                    "cut short on the way", field="sha256")
    header = _header(blob)
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _fail("the metadata must map names to strings", _part("metadata"))
    fmt = metadata.get("format")
    if fmt not in FORMATS:
        raise _fail(f"format {clip(str(fmt), 40)!r} is not one this server reads "
                    f"({', '.join(FORMATS)})" if fmt else
                    "the metadata has no format: this is not a fitserve checkpoint",
                    _part("format"))
    for name, info in header.items():
        if name != "__metadata__" and (not isinstance(info, dict) or info.get("dtype") != "F32"):
            raise _fail(f"tensor {clip(name, 80)!r} is not float32 "
                        f"({info.get('dtype') if isinstance(info, dict) else info!r})",
                        _tensor(name))
    try:
        tensors = load(blob)  # checks every tensor's byte range against the file
    except SafetensorError as e:
        raise _fail(f"the file is cut short or malformed: {clip(str(e), 200)}") from None

    kind = metadata.get("kind", "")
    if kind not in kinds():
        raise _fail(f"kind {clip(kind, 40)!r} is not one of this server's: "
                    f"{', '.join(kinds())}", _part("kind"))
    config = _json(metadata, "config")
    if not isinstance(config, dict):
        raise _fail("the config must be a JSON object", _CONFIG)
    n_in, n_out = config.get("in_features"), config.get("out_features")
    for key, value in (("in_features", n_in), ("out_features", n_out)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(f"config {key} must be a positive integer", f"{_CONFIG}.{key}")
    assert isinstance(n_in, int) and isinstance(n_out, int)
    options = {k: v for k, v in config.items() if k not in ("in_features", "out_features")}
    try:
        model = _MODEL_SPEC.validate_python({**options, "kind": kind})
        spec = TrainingSpec(model=model)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "config"
        raise _fail(f"config {where}: {first['msg']}",
                    f"{_CONFIG}.{where}" if where != "config" else _CONFIG) from None
    classifier = get_kind(kind).task == "classification"
    if classifier:
        classes = int(getattr(model, "classes", 0) or 0)
        if classes < 2 or n_out not in (1, classes) or (n_out == 1 and classes != 2):
            raise _fail(f"a logistic model of {classes} classes has "
                        f"{'1 or 2 outputs' if classes == 2 else f'{classes} outputs'}, "
                        f"not {n_out}", f"{_CONFIG}.out_features")
    check_model(settings, spec, n_in, n_out)  # the limits a job is held to
    want = expected_shapes(kind, {**config, "in_features": n_in, "out_features": n_out})
    for name in sorted(set(want) | set(tensors)):
        have = tuple(tensors[name].shape) if name in tensors else None
        if name not in want:
            raise _fail(f"tensor {clip(name, 80)!r} is not one of a {kind} model's "
                        f"({', '.join(want)})", _tensor(name))
        if have is None:
            raise _fail(f"tensor {name!r} is missing; a {kind} model has "
                        f"{', '.join(want)}", _tensor(name))
        if have != want[name]:
            raise _fail(f"tensor {name!r} is {list(have)}; its config needs "
                        f"{list(want[name])}", _tensor(name))
        if not np.isfinite(tensors[name]).all():
            raise _fail(f"tensor {name!r} has values that are not finite", _tensor(name))
    features = _names(_json(metadata, "feature_names"), (n_in,), "feature_names")
    targets = _names(_json(metadata, "target_names"),
                     (1, int(getattr(model, "classes", 0))) if classifier else (n_out,),
                     "target_names")
    if len(features) > settings.max_features:  # the parameter limit bounds it already
        raise _fail(f"{len(features)} features exceed FITSERVE_MAX_FEATURES",
                    _part("feature_names"))
    norm = _normalization(_json(metadata, "normalization"), n_in, n_out, not classifier)
    if "pipeline" in metadata:  # a model trained on typed columns: its feature pipeline
        from service.lifecycle.checkpoint_pipeline import checked_pipeline

        classes = int(getattr(model, "classes", 0) or 0) if classifier else 0
        try:
            checked_pipeline(_json(metadata, "pipeline"), features, classes)
        except ValueError as e:
            raise _fail(str(e), _part("pipeline")) from None
    return Checkpoint(kind=kind, config={**config, "in_features": n_in, "out_features": n_out},
                      spec=spec, tensors=tensors, metadata=metadata, feature_names=features,
                      target_names=targets, normalization=norm, sha256=sha256)


def import_checkpoint(meta: MetadataStore, artifacts: ArtifactStore, settings: Settings,
                      blob: bytes, sha256: str | None, name: str, tenant: str) -> ModelRow:
    """Check an uploaded checkpoint, then store it as the next version of ``name``: the file
    first (a stray one is swept), then the record; a record that fails takes its file back."""
    ck = read_checkpoint(blob, sha256, settings)
    model_id = new_id("mdl")
    metadata = {**{k: ck.metadata[k] for k in _KEPT if k in ck.metadata},
                "imported_sha256": ck.sha256}
    try:
        path, stored_sha = artifacts.put_checkpoint(model_id, ck.tensors, metadata)
    except OSError as e:
        if is_disk_full(e):
            raise InsufficientStorage() from None
        raise StorageUnavailable(f"the checkpoint could not be stored "
                                 f"({e.strerror or type(e).__name__}); try again later",
                                 headers={"Retry-After": "30"}) from None
    weight, bias = reported_linear(get_kind(ck.kind), ck.tensors, ck.config, ck.normalization)
    origin = {"imported": {"sha256": ck.sha256,
                           "source_job_id": ck.metadata.get("job_id"),
                           "source_dataset_sha256": ck.metadata.get("dataset_sha256")}}
    try:
        return meta.add_model(
            model_id, tenant=tenant, name=name, job_id=None, dataset_id=None, kind=ck.kind,
            config=ck.config, in_features=ck.config["in_features"],
            out_features=ck.config["out_features"],
            weight=None if weight is None else weight.astype(float).tolist(),
            bias=None if bias is None else bias.astype(float).tolist(),
            normalization=ck.normalization, feature_names=ck.feature_names,
            target_names=ck.target_names, metrics={}, spec={}, device="unknown",
            checkpoint=path, sha256=stored_sha, origin=origin,
        )
    except BaseException:
        artifacts.delete_checkpoint(model_id)
        raise


_KEPT = ("format", "kind", "config", "feature_names", "target_names", "normalization", "job_id",
         "dataset_sha256", "pipeline")
"""The metadata an imported checkpoint keeps (its own lines, as it came)."""
