"""Serving fitted models: load a checkpoint once, verify it, answer from memory.

The hot path (a cached model) touches neither the metadata store nor the disk. Which model a
name, ``name@alias`` or "latest" means is cached too (for a name with a traffic split, the
split: each request draws from it), and dropped when the catalog version moves: a counter
that workers bump around every new model and the API around every alias or split change
(shared memory in the embedded mode, Redis in scale-out).

Every kind the registry has is answered in numpy (service/serving/forward.py); torch is
imported only to build the module of a kind or option that has no numpy forward pass.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load

from models.registry import get_kind
from service.data.table import safetensors_metadata
from service.errors import InvalidInput, ModelUnavailable, ShapeMismatch, unknown_field_message
from service.features.pipeline import FeatureError, Pipeline, identity_pipeline, label_text
from service.serving.forward import CheckpointMismatch, Forward, numpy_forward, state_order
from service.serving.traffic import TrafficSplit
from service.store.artifacts import ArtifactStore, sha256_hex
from service.store.metadata import MetadataStore
from service.store.tables import ModelRow
from service.training.scaling import Scaling, served


@dataclass(frozen=True)
class Prediction:
    y: np.ndarray  # (N, out): regression outputs; a classifier's labels as one column
    labels: np.ndarray | None = None  # (N,) int64, classifiers
    probabilities: np.ndarray | None = None  # (N, classes), classifiers


@dataclass(frozen=True)
class LoadedModel:
    id: str
    tenant: str
    name: str | None
    version: int | None
    kind: str
    in_features: int
    out_features: int  # of the predictions: 1 (the label) for a classifier
    state: dict[str, np.ndarray]  # the checkpoint's tensors by state_dict name
    weight_t: np.ndarray | None  # (in, out) float32: a plain linear layer's, else None
    bias: np.ndarray | None  # (out,)
    module: Any = None  # the nn.Module, for kinds the numpy forward does not cover
    scaling: Scaling | None = None  # what standardize learnt
    classes: int | None = None
    feature_names: tuple[str, ...] = ()  # the columns of x (the pipeline's outputs)
    forward: Forward | None = None  # the module's forward in numpy (serving/forward.py)
    pipeline: Pipeline | None = None  # named fields -> x; identity for a matrix model
    label_keys: tuple[str, ...] | None = None  # a labelled classifier's, as JSON keys

    def matrix(self, columns: Mapping[str, Sequence[object] | None], rows: int,
               form: str) -> np.ndarray:
        """Named fields (``form``: rows or columns, for the error's field) as x: unknown
        names are refused (the targets' are ignored), missing ones imputed when the model
        imputes them."""
        pipeline = self.pipeline
        if pipeline is None:
            raise InvalidInput(f"model {self.id!r} has no feature names: send x, "
                               f"{self.expects()}", field=form)
        # the target's own column may ride along (rows sent back as they were stored)
        unknown = pipeline.unknown(columns) if not pipeline.known.issuperset(columns) else ()
        if unknown:
            raise InvalidInput(unknown_field_message(unknown, pipeline.input_names),
                               field=f"{form}.{unknown[0]}")
        try:
            return pipeline.fields(columns, rows)
        except FeatureError as e:
            raise InvalidInput(e.message, field=f"{form}.{e.field}") from None

    def labelled(self, p: Prediction) -> tuple[list[object], list[dict[str, float]]] | None:
        """A labelled classifier's answer: each row's label, and its probabilities keyed by
        label; None for a model whose classes are indices."""
        if self.label_keys is None or self.pipeline is None or self.pipeline.labels is None \
                or p.labels is None or p.probabilities is None:
            return None
        names = self.pipeline.labels
        keys = self.label_keys
        return ([names[i] for i in p.labels.tolist()],
                [dict(zip(keys, row, strict=True)) for row in p.probabilities.tolist()])

    def expects(self) -> str:
        """``2 features per row (a, b)``: what a row of x must hold."""
        n, names = self.in_features, list(self.feature_names)
        if len(names) != n:
            names = []
        if len(names) > 10:
            names = [*names[:8], "...", names[-1]]
        return (f"{n} feature{'' if n == 1 else 's'} per row"
                + (f" ({', '.join(names)})" if names else ""))

    def _check(self, x: np.ndarray) -> None:
        if x.shape[1] != self.in_features:
            raise ShapeMismatch(self._shape_message(x), field="x")

    def _shape_message(self, x: np.ndarray) -> str:
        """Names the features and the form: a flat ``[100, 3]`` reads as one column, where
        a 2-feature model needs ``[[100, 3]]``."""
        text = f"model expects {self.expects()}, got {x.shape[1]} in row 0"
        n = self.in_features
        if x.shape[1] == 1 and x.shape[0] == n and n <= 10:
            row = ", ".join(f"{float(v):g}" for v in x[:, 0])
            return f"{text}: x is a list of rows; send one row as [[{row}]]"
        if x.shape[1] == 1:
            example = ", ".join(f"{i + 1}.0" for i in range(min(n, 4)))
            example += f", ..., {n}.0" if n > 4 else ""
            return f"{text}: x is a list of rows, each a list of {n} numbers: [[{example}]]"
        return f"{text}: each row of x needs {n} value{'' if n == 1 else 's'}"

    def _outputs(self, x: np.ndarray) -> np.ndarray:
        """The module's raw outputs (logits for a classifier), in the original units."""
        self._check(x)
        y = served(x, self._forward, self.scaling)
        if not np.isfinite(y).all():  # JSON would carry inf as null: a wrong number
            row = int(np.argwhere(~np.isfinite(y))[0][0])
            raise InvalidInput(
                f"the prediction for x row {row} overflows float32: scale the inputs down",
                field="x",
            )
        return y

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self.forward is not None:
            return self.forward(x)
        if self.weight_t is None:
            return _module_forward(self.module, x)
        y = x @ self.weight_t  # (N, in) @ (in, out) -> (N, out)
        if self.bias is not None:
            y += self.bias
        return y

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.infer(x).y

    def infer(self, x: np.ndarray) -> Prediction:
        out = self._outputs(x)
        if self.classes is None:
            return Prediction(out)
        if out.shape[1] == 1:  # one logit: P(1) = sigmoid(z), computed without overflow
            p1 = (0.5 * (1.0 + np.tanh(0.5 * out.astype(np.float64)))).astype(np.float32)
            probs = np.hstack([1.0 - p1, p1])
        else:
            z = out.astype(np.float64)
            z = np.exp(z - z.max(axis=1, keepdims=True))
            probs = (z / z.sum(axis=1, keepdims=True)).astype(np.float32)
        labels = probs.argmax(axis=1)
        return Prediction(labels[:, None].astype(np.float32), labels, probs)


def _module_forward(module: Any, x: np.ndarray) -> np.ndarray:
    import torch  # only models without the fast path need torch in the API process

    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


class Predictor:
    def __init__(
        self,
        meta: MetadataStore,
        artifacts: ArtifactStore,
        catalog_version: Callable[[], int] | None = None,
    ) -> None:
        self.meta = meta
        self.artifacts = artifacts
        self._own_version = 0
        self._catalog_version = catalog_version or (lambda: self._own_version)
        self._models: dict[str, LoadedModel] = {}
        # (tenant, reference) -> a model id, or the split a bare name's requests draw from
        self._aliases: dict[tuple[str, str | None], str | TrafficSplit] = {}
        self._alias_version = -1
        self._lock = threading.Lock()
        self.rows_predicted = 0
        """Rows answered by every predict path (read by /metrics; bumped on the event loop)."""
        self.requests_by_model: dict[str, int] = {}
        """Predict requests answered per model id, every path (read by /metrics)."""
        self.model_labels: dict[str, tuple[str, str, str]] = {}
        """(tenant, name or id, version) of each model counted, kept past its deletion."""

    def answered(self, model: LoadedModel, rows: int) -> None:
        """Count a predict answer (on the event loop: plain ints, no lock)."""
        self.rows_predicted += rows
        n = self.requests_by_model.get(model.id)
        if n is None:
            self.model_labels[model.id] = (model.tenant, model.name or model.id,
                                           "" if model.version is None else str(model.version))
            n = 0
        self.requests_by_model[model.id] = n + 1

    def catalog_changed(self) -> None:
        """Called in-process when a model was created here (no shared counter)."""
        self._own_version += 1

    def forget(self, model_id: str | None = None) -> None:
        """Drop what this process resolved names and "latest" to (a model was imported or
        deleted here: the catalog counter may be a worker pool's, which does not move for
        it), and the model itself when it was deleted: predict answers 404 for it, or the
        name's remaining latest version, at once."""
        if model_id is not None:
            with self._lock:
                self._models.pop(model_id, None)
        self._aliases = {}

    def cached(self, ref: str | None, tenant: str, route_key: str | None = None
               ) -> LoadedModel | None:
        """The model for an id, a name, ``name@alias`` or None (latest), if it is in memory;
        no I/O. A name with a traffic split draws its version (by ``route_key`` if given)."""
        if ref is not None and ref.startswith("mdl_"):
            m = self._models.get(ref)
            if m is not None and m.tenant == tenant:
                return m
            if m is not None:
                return None
        version = self._catalog_version()
        if version != self._alias_version:
            self._aliases = {}
            self._alias_version = version
            return None
        route = self._aliases.get((tenant, ref))
        if route is None:
            return None
        if isinstance(route, TrafficSplit):
            route = route.pick(route_key)
        return self._models.get(route)

    def load(self, ref: str | None, tenant: str, route_key: str | None = None) -> LoadedModel:
        """Resolve and load (blocking: metadata store and disk), then cache."""
        version = self._catalog_version()
        if ref is not None and "@" not in ref and not ref.startswith("mdl_"):
            routes = self.meta.traffic_routes(ref, tenant)
            if routes is not None:
                for r in routes:
                    self._cache(r.model)
                split = TrafficSplit(ref, tuple(r.model.id for r in routes),
                                     tuple(r.weight for r in routes))
                if version == self._catalog_version():
                    self._aliases[(tenant, ref)] = split
                return self._models[split.pick(route_key)]
        row = (self.meta.find_model(None, tenant) if ref is None
               else self.meta.resolve_model(ref, tenant))
        model = self._cache(row)
        if ref is None or not ref.startswith("mdl_") or ref != row.id:
            if version == self._catalog_version():
                self._aliases[(tenant, ref)] = row.id
        return model

    def _cache(self, row: ModelRow) -> LoadedModel:
        model = self._models.get(row.id)
        if model is None:
            model = self._load_row(row)
            with self._lock:
                self._models[row.id] = model
        return model

    def checkpoint_bytes(self, row: ModelRow) -> bytes:
        """The checkpoint file, verified against the sha256 recorded with the model: what
        was changed on disk is neither served nor handed out."""
        try:
            blob = self.artifacts.read_checkpoint(row.id)
        except OSError as e:
            raise ModelUnavailable(
                f"the checkpoint of model {row.id!r} cannot be read ({e.strerror})"
            ) from None
        if sha256_hex(blob) != row.sha256:
            raise ModelUnavailable(
                f"the checkpoint of model {row.id!r} fails its checksum (sha256 mismatch); "
                "it was changed on disk and will not be served"
            )
        return blob

    def _load_row(self, row: ModelRow) -> LoadedModel:
        blob = self.checkpoint_bytes(row)
        try:
            tensors = load(blob)
        except SafetensorError:
            raise ModelUnavailable(f"the checkpoint of model {row.id!r} is unreadable") from None
        kind = get_kind(row.kind)
        config = dict(row.config)
        try:
            forward = numpy_forward(
                row.kind, {"in_features": row.in_features, "out_features": row.out_features,
                           **config}, tensors)
        except (CheckpointMismatch, KeyError) as e:
            # the words load_state_dict's refusal gets below
            raise ModelUnavailable(f"the checkpoint of model {row.id!r} does not fit its "
                                   f"{row.kind} config (RuntimeError)") from e
        module = None
        if forward is None:  # no numpy pass for this kind or option: torch's module
            module = _build_module(row, tensors)
            order = list(module.state_dict())  # safetensors keeps no order: the module's
        else:
            order = state_order(list(tensors))
        tensors = {k: tensors[k] for k in order}
        plain = kind.linear_head and not kind.transforms_inputs  # a linear layer alone
        weight = tensors["linear.weight"].astype(np.float32) if plain else None
        bias = tensors.get("linear.bias") if plain else None
        classes = config.get("classes") if kind.task == "classification" else None
        pipeline = _pipeline(row, blob)
        labels = pipeline.labels if pipeline is not None else None
        return LoadedModel(
            id=row.id,
            tenant=row.tenant,
            name=row.name,
            version=row.version,
            kind=row.kind,
            in_features=row.in_features,
            out_features=1 if classes else row.out_features,
            state=tensors,
            weight_t=None if weight is None else np.ascontiguousarray(weight.T),
            bias=None if bias is None else bias.astype(np.float32),
            module=module,
            scaling=Scaling.from_normalization(row.normalization),
            classes=classes,
            feature_names=tuple(row.feature_names or ()),
            forward=forward,
            pipeline=pipeline,
            label_keys=None if labels is None else tuple(label_text(v) for v in labels),
        )


def _pipeline(row: ModelRow, blob: bytes) -> Pipeline | None:
    """The checkpoint's feature pipeline; a matrix model's identity one over its feature
    names (None when they do not name its inputs)."""
    stored = safetensors_metadata(blob).get("pipeline")
    if stored is None:
        names = list(row.feature_names or ())
        if len(names) != row.in_features or len(set(names)) != len(names):
            return None
        return identity_pipeline(names, row.target_names or ())
    try:
        pipeline = Pipeline.from_json(json.loads(stored))
    except (ValueError, KeyError, TypeError) as e:
        raise ModelUnavailable(f"the feature pipeline of model {row.id!r} is unreadable "
                               f"({e})") from None
    if pipeline.width != row.in_features:
        raise ModelUnavailable(f"the feature pipeline of model {row.id!r} writes "
                               f"{pipeline.width} inputs; the model takes {row.in_features}")
    return pipeline


def _build_module(row: ModelRow, tensors: dict[str, np.ndarray]) -> Any:
    """``Model(Config(**config))`` and the checkpoint's tensors, strictly by name."""
    import torch

    from models import build_model

    module = build_model(row.kind, **row.config)
    try:
        module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
    except (RuntimeError, KeyError) as e:
        raise ModelUnavailable(f"the checkpoint of model {row.id!r} does not fit its "
                               f"{row.kind} config ({type(e).__name__})") from None
    return module.eval()
