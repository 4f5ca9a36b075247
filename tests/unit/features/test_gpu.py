"""The feature pipeline's parity on CUDA: a Table (text, booleans, blanks) prepared on the
CPU, trained on the GPU, gives the CPU's model (closed form and the autograd loop). Marked
``gpu``: skipped where torch sees no CUDA device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.features import FeatureOptions, prepare_table
from service.training.fit import fit, split_rows
from service.training.spec import TrainingSpec
from tests.tables import houses

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.mark.parametrize(("kind", "extra"), [
    ("linear", {"epochs": 5000, "lr": 0.1}),
    ("logistic", {"epochs": 300, "optimizer": {"name": "adam", "lr": 0.1}}),
])
def test_a_tabular_job_on_cuda_matches_the_cpu(kind, extra):
    table = houses(n=200, seed=3, noise=5.0)
    spec = TrainingSpec.model_validate({"model": kind, "seed": 1, "standardize": True,
                                        "validation_fraction": 0.2, **extra})
    train, _ = split_rows(table.rows, spec.validation_fraction, 1)
    if kind == "logistic":  # above or below the median price: two classes
        from service.data.table import Column, Table

        price = table.targets[0].values
        band = (price > np.median(price)).astype(np.float32)
        table = Table(table.features, [Column("band", "boolean", band)])
        spec = spec.model_copy(update={"loss": "bce", "model": spec.model.model_copy(
            update={"classes": 2})})
    prepared = prepare_table(table, FeatureOptions(min_frequency=5), train,
                             classify=kind == "logistic")
    gpu = fit(spec, prepared.x, prepared.y, "cuda")
    cpu = fit(spec, prepared.x, prepared.y, "cpu")
    assert gpu.device == "cuda"
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=1e-4, atol=1e-6)
    for name, value in cpu.state.items():
        np.testing.assert_allclose(gpu.state[name], value, rtol=1e-3, atol=1e-4)
