"""A warm start's beginning, read by the worker: the parent model's verified checkpoint."""

from __future__ import annotations

from safetensors import SafetensorError
from safetensors.numpy import load

from service.errors import NotFound, TrainingError
from service.store.artifacts import ArtifactStore, sha256_hex
from service.store.metadata import MetadataStore
from service.training.fit import InitialState


class ParentMissing(TrainingError):
    """The model a warm start begins from is gone, or its checkpoint fails its checksum."""

    type = "parent_missing"


def initial_state(meta: MetadataStore, artifacts: ArtifactStore, model_id: str,
                  tenant: str) -> InitialState:
    """The tensors and normalization of ``model_id``, its checkpoint verified by sha256."""
    try:
        row = meta.get_model(model_id, tenant)
        blob = artifacts.read_checkpoint(row.id)
    except (NotFound, OSError):
        raise ParentMissing(f"the model to start from, {model_id}, was deleted before the "
                            "job ran") from None
    if sha256_hex(blob) != row.sha256:
        raise ParentMissing(f"the checkpoint of {model_id}, the model to start from, fails "
                            "its checksum (sha256 mismatch)")
    try:
        tensors = load(blob)
    except SafetensorError:
        raise ParentMissing(f"the checkpoint of {model_id} is unreadable") from None
    return InitialState(state=tensors, normalization=row.normalization)
