"""The numeric path with and without the feature pipeline's code (issue 12): the seed job's
data read and trained as the worker does now (``load_dataset``, ``training_data``: the
pipeline is the identity and is skipped) against the worker's former two steps
(``get_dataset``, ``fit``). In process, no server: what differs is microseconds."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from bench.table import Row, ratio_row

REPEATS = 30
"""Jobs per measurement: the figure is their median, per round."""


def row(seed: dict[str, Any], epochs: int, rounds: int,
        alternate: Callable[..., tuple[list[Any], list[Any]]]) -> Row:
    from service.store.artifacts import ArtifactStore
    from service.training.fit import fit
    from service.training.spec import TrainingSpec
    from service.worker.runner import training_data

    x = np.asarray(seed["x"], np.float32)
    y = np.asarray(seed["y"], np.float32)
    # as submit stores it: standardize resolved, so nothing is copied on the way
    spec = TrainingSpec(seed=0, epochs=epochs, standardize=False)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = ArtifactStore(Path(tmp))
        sha = "0" * 64
        artifacts.put_dataset(sha, artifacts.dataset_bytes(x, y, ["x"], ["y"]))
        dataset = cast(Any, SimpleNamespace(feature_names=["x"], target_names=["y"]))

        def with_pipeline() -> None:
            s, xs, ys, _ = training_data(spec, dataset, artifacts.load_dataset(sha))
            fit(s, xs, ys)

        def without() -> None:
            xs, ys = artifacts.get_dataset(sha)
            fit(spec, xs, ys)

        def median(fn: Callable[[], None]) -> float:
            times = []
            for _ in range(REPEATS):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)

        with_pipeline(), without()  # torch's first-call costs, paid before either is timed
        a, b = alternate(lambda: median(with_pipeline), lambda: median(without), rounds)
    count = f"{epochs:,}".replace(",", " ")
    return ratio_row(f"seed job's numeric path with the pipeline code ({count} epochs; in "
                     "process)", a, b, "s", "<= 1.05", le=1.05)
