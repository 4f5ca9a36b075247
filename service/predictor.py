"""Serving fitted models: load a checkpoint once, verify it, answer from memory.

The hot path (a cached model) touches neither the metadata store nor the disk. Which model a
name or "latest" means is cached too, and dropped when the catalog version moves: a counter
that workers bump around every new model (shared memory in the embedded mode).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load

from service.errors import InvalidInput, ModelUnavailable, ShapeMismatch
from service.store.artifacts import ArtifactStore, sha256_hex
from service.store.metadata import MetadataStore
from service.store.tables import ModelRow


@dataclass(frozen=True)
class LoadedModel:
    id: str
    tenant: str
    name: str | None
    version: int | None
    in_features: int
    out_features: int
    weight_t: np.ndarray  # (in_features, out_features), float32
    bias: np.ndarray | None  # (out_features,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.in_features:
            raise ShapeMismatch(
                f"model expects {self.in_features} feature(s) per row, got {x.shape[1]} "
                "in row 0",
                field="x",
            )
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            y = x @ self.weight_t  # (N, in) @ (in, out) -> (N, out)
            if self.bias is not None:
                y += self.bias
        if not np.isfinite(y).all():  # JSON would carry inf as null: a wrong number
            row = int(np.argwhere(~np.isfinite(y))[0][0])
            raise InvalidInput(
                f"the prediction for x row {row} overflows float32: scale the inputs down",
                field="x",
            )
        return y


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
        self._aliases: dict[tuple[str, str | None], str] = {}
        self._alias_version = -1
        self._lock = threading.Lock()
        self.rows_predicted = 0
        """Rows answered by every predict path (read by /metrics; bumped on the event loop)."""

    def catalog_changed(self) -> None:
        """Called in-process when a model was created here (no shared counter)."""
        self._own_version += 1

    def cached(self, ref: str | None, tenant: str) -> LoadedModel | None:
        """The model for an id, a name or None (latest), if it is in memory; no I/O."""
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
        model_id = self._aliases.get((tenant, ref))
        return self._models.get(model_id) if model_id else None

    def load(self, ref: str | None, tenant: str) -> LoadedModel:
        """Resolve and load (blocking: metadata store and disk), then cache."""
        version = self._catalog_version()
        row = self.meta.find_model(ref, tenant)
        model = self._models.get(row.id)
        if model is None:
            model = self._load_row(row)
            with self._lock:
                self._models[row.id] = model
        if ref is None or not ref.startswith("mdl_") or ref != row.id:
            if version == self._catalog_version():
                self._aliases[(tenant, ref)] = row.id
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
        weight = tensors["linear.weight"].astype(np.float32)
        bias = tensors.get("linear.bias")
        return LoadedModel(
            id=row.id,
            tenant=row.tenant,
            name=row.name,
            version=row.version,
            in_features=int(weight.shape[1]),
            out_features=int(weight.shape[0]),
            weight_t=np.ascontiguousarray(weight.T),
            bias=None if bias is None else bias.astype(np.float32),
        )

