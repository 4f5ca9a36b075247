"""Classifier targets: class indices or one-hot rows, read into one index per row."""

from __future__ import annotations

import numpy as np


def class_indices(y: np.ndarray, classes: int | None = None) -> tuple[np.ndarray, int]:
    """Classifier targets -> (class index per row, int64; number of classes). One column:
    indices 0..C-1. More columns: one-hot rows. Raises ValueError naming the first bad row."""
    if y.shape[1] == 1:
        col = y[:, 0]
        bad = (col != np.round(col)) | (col < 0)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"row {row}: target {col[row]:g} is not a class index (0, 1, ...)")
        found = int(col.max()) + 1 if len(col) else 2
        count = classes or max(2, found)
        if found > count:
            row = int(np.argmax(col >= count))
            raise ValueError(f"row {row}: class {int(col[row])} is out of range for "
                             f"{count} classes")
        return col.astype(np.int64), count
    if classes is not None and classes != y.shape[1]:
        raise ValueError(f"{y.shape[1]} one-hot target columns but model.classes is {classes}")
    bad = ~(((y == 0) | (y == 1)).all(axis=1) & (y.sum(axis=1) == 1))
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"row {row}: a one-hot target row has exactly one 1 and 0 elsewhere")
    return y.argmax(axis=1).astype(np.int64), y.shape[1]
