"""The CUDA path, held to the plain loop on the CPU: every engine, mini-batches, early
stopping, every model kind, and predict of a model trained on the GPU. Marked ``gpu``: they
skip where torch sees no CUDA device (the CPU machines this suite usually runs on), and run
first when a GPU machine is lent (``pytest -m gpu``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.config import Settings
from service.training.fit import fit
from service.training.spec import TrainingSpec
from tests.helpers import finished_job, make_linear_data, seed_arrays, seed_plain_loop

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.mark.parametrize(("engine", "used"), [("auto", "closed_form"), ("autograd", "autograd")])
def test_the_seed_job_on_cuda_matches_the_plain_cpu_loop(engine, used):
    losses, w, b = seed_plain_loop(2000)
    result = fit(TrainingSpec(seed=0, epochs=2000, engine=engine), *seed_arrays(), "cuda")
    assert (result.engine, result.device) == (used, "cuda")
    np.testing.assert_allclose(result.loss, losses, rtol=1e-4)
    np.testing.assert_allclose(result.weight, w, atol=1e-4)
    np.testing.assert_allclose(result.bias, b, atol=1e-4)


@pytest.mark.parametrize("options", [
    {"batch_size": 16},
    {"validation_fraction": 0.2, "early_stopping": {"patience": 5}},
])
def test_the_fused_step_on_cuda_matches_the_cpu(options):
    x, y = make_linear_data(200, [[1.0, -2.0, 0.5]], [0.5], noise=0.1, seed=1)
    spec = TrainingSpec.model_validate({"seed": 3, "epochs": 300, "lr": 0.05, **options})
    gpu, cpu = fit(spec, x, y, "cuda"), fit(spec, x, y, "cpu")
    assert gpu.engine == cpu.engine == "fused" and gpu.device == "cuda"
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=1e-4)
    np.testing.assert_allclose(gpu.weight, cpu.weight, atol=1e-4)
    assert gpu.stopped == cpu.stopped


@pytest.mark.parametrize("model", [
    {"kind": "logistic"},
    {"kind": "polynomial", "degree": 3},
    {"kind": "mlp", "hidden": [8]},
])
def test_every_kind_trains_on_cuda_as_on_the_cpu(model):
    x, y = make_linear_data(64, [[1.0]], [0.0], noise=0.0, seed=2)
    if model["kind"] == "logistic":
        y = (y > 0).astype(np.float32)
    spec = TrainingSpec.model_validate({"seed": 0, "epochs": 200, "lr": 0.05, "model": model,
                                        "standardize": model["kind"] == "polynomial"})
    gpu, cpu = fit(spec, x, y, "cuda"), fit(spec, x, y, "cpu")
    assert gpu.device == "cuda" and gpu.engine == cpu.engine
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=1e-3, atol=1e-6)
    for name, value in cpu.state.items():
        np.testing.assert_allclose(gpu.state[name], value, rtol=1e-3, atol=1e-5)


def test_a_model_trained_on_cuda_predicts_through_the_api(tmp_path):
    from fastapi.testclient import TestClient

    from service.main import create_app

    app = create_app(Settings(data_dir=tmp_path / "data", workers=0, device="cuda"),
                     start_workers=False)
    x, y = seed_arrays()
    with TestClient(app, base_url="http://127.0.0.1") as client:
        job = client.post("/v1/jobs", json={"x": x.tolist(), "y": y.tolist(), "seed": 0,
                                            "epochs": 2000}).json()
        assert job["device"] == "cuda"
        services = app.state.services
        from service.worker.runner import run_job

        row = services.meta.claim_next("gpu-test")
        assert run_job(row, "gpu-test", services.meta, services.artifacts) == "succeeded"
        done = finished_job(client, job["id"])
        assert done["device_used"] == "cuda"
        model = client.get(f"/v1/models/{done['model_id']}").json()
        answer = client.post("/predict", json={"x": [[3.3], [4.4]]}).json()
    _, w, b = seed_plain_loop(2000)
    np.testing.assert_allclose(model["weight"], w, atol=1e-4)
    np.testing.assert_allclose(answer["y"], np.array([[3.3], [4.4]]) @ w.T + b, rtol=1e-4)
