"""Artifacts on the local filesystem: datasets (content-addressed) and checkpoints.

Both are safetensors files: tensors plus string metadata, never a pickle. Every write goes
to a temporary file, is fsynced and renamed into place, so a reader sees all or nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[a-z]{2,4}_[0-9a-f]{24}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ArtifactStore:
    """Files under ``root``: ``datasets/<sha256>.safetensors``, ``checkpoints/<id>.safetensors``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dataset_path(self, sha: str) -> Path:
        if not _SHA_RE.match(sha):  # names never become paths unchecked
            raise ValueError(f"not a sha256: {sha!r}")
        return self.root / "datasets" / f"{sha}.safetensors"

    def checkpoint_path(self, model_id: str) -> Path:
        if not _ID_RE.match(model_id):
            raise ValueError(f"not a model id: {model_id!r}")
        return self.root / "checkpoints" / f"{model_id}.safetensors"

    # datasets -------------------------------------------------------

    @staticmethod
    def dataset_bytes(
        x: np.ndarray, y: np.ndarray, feature_names: list[str], target_names: list[str]
    ) -> bytes:
        meta = {
            "feature_names": json.dumps(feature_names),
            "target_names": json.dumps(target_names),
        }
        return save({"x": np.ascontiguousarray(x), "y": np.ascontiguousarray(y)}, metadata=meta)

    def put_dataset(self, sha: str, blob: bytes) -> None:
        path = self._dataset_path(sha)
        if not path.exists():
            write_atomic(path, blob)

    def get_dataset(self, sha: str) -> tuple[np.ndarray, np.ndarray]:
        """The arrays, memory-mapped: safetensors' torch reader maps the file without copying
        (its numpy reader copies), so a worker holds the data once, as file-backed pages."""
        with safe_open(str(self._dataset_path(sha)), framework="pt") as f:
            return f.get_tensor("x").numpy(), f.get_tensor("y").numpy()

    def dataset_file(self, sha: str) -> Path:
        return self._dataset_path(sha)

    def delete_dataset(self, sha: str) -> None:
        self._dataset_path(sha).unlink(missing_ok=True)

    # checkpoints ----------------------------------------------------

    def put_checkpoint(
        self, model_id: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]
    ) -> tuple[str, str]:
        """Write a checkpoint; returns (path relative to root, sha256)."""
        blob = save(tensors, metadata=metadata)
        path = self.checkpoint_path(model_id)
        write_atomic(path, blob)
        return str(path.relative_to(self.root)), sha256_hex(blob)

    def read_checkpoint(self, model_id: str) -> bytes:
        return self.checkpoint_path(model_id).read_bytes()
