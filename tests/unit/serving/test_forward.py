"""The numpy forward passes (service/serving/forward.py) against each kind's own torch
module: the same numbers within 1e-6 of the outputs' scale, the tensors in the module's
order, and a checkpoint that does not fit its config refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import build_model
from service.serving.forward import CheckpointMismatch, numpy_forward, state_order

CONFIGS = [
    ("linear", {"in_features": 3, "out_features": 2}),
    ("linear", {"in_features": 1, "out_features": 1, "bias": False}),
    ("logistic", {"in_features": 2, "out_features": 3, "classes": 3}),
    ("polynomial", {"in_features": 1, "out_features": 1, "degree": 3}),
    ("polynomial", {"in_features": 3, "out_features": 2, "degree": 4, "interactions": True}),
    ("polynomial", {"in_features": 2, "out_features": 1, "degree": 10, "bias": False}),
    ("mlp", {"in_features": 1, "out_features": 1}),
    ("mlp", {"in_features": 4, "out_features": 2, "hidden": [64, 64, 64], "activation": "relu"}),
    ("mlp", {"in_features": 20, "out_features": 3, "hidden": [256, 128], "activation": "tanh",
             "bias": False}),
]


def _module(kind: str, config: dict, seed: int = 0):
    torch.manual_seed(seed)
    module = build_model(kind, **config).eval()
    with torch.no_grad():  # weights of a trained model's size, not only the init's
        for p in module.parameters():
            p.mul_(3.0)
    return module


def _tensors(module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(("kind", "config"), CONFIGS)
def test_numpy_forward_gives_the_modules_numbers(kind, config):
    module = _module(kind, config)
    forward = numpy_forward(kind, config, _tensors(module))
    assert forward is not None
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((500, config["in_features"])) * 1.5).astype(np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    got = forward(x)
    assert got.dtype == np.float32 and got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize(("kind", "config"), CONFIGS)
def test_state_order_is_the_modules(kind, config):
    names = list(_module(kind, config).state_dict())
    assert state_order(sorted(names, reverse=True)) == names


def test_a_checkpoint_that_does_not_fit_its_config_is_refused():
    tensors = _tensors(_module("mlp", {"in_features": 2, "out_features": 1}))
    config = {"in_features": 2, "out_features": 1}
    with pytest.raises(CheckpointMismatch):
        numpy_forward("mlp", {**config, "hidden": [16, 16]}, tensors)  # shapes
    with pytest.raises(CheckpointMismatch):
        numpy_forward("mlp", {**config, "hidden": [32]}, tensors)  # names
    with pytest.raises(CheckpointMismatch):
        numpy_forward("mlp", {**config, "bias": False}, tensors)  # a bias it should not have
    with pytest.raises(CheckpointMismatch):
        numpy_forward("linear", {"in_features": 3, "out_features": 1},
                      {"linear.weight": np.zeros((1, 2), np.float32),
                       "linear.bias": np.zeros(1, np.float32)})


def test_a_kind_or_option_without_a_numpy_pass_says_so():
    tensors = _tensors(_module("mlp", {"in_features": 1, "out_features": 1}))
    assert numpy_forward("mlp", {"in_features": 1, "out_features": 1, "activation": "gelu"},
                         tensors) is None
    assert numpy_forward("transformer", {"in_features": 1, "out_features": 1}, {}) is None


KINDS = [
    {"model": "polynomial", "x": [[-2.0], [-1.0], [0.0], [1.0], [2.0]],
     "y": [[9.0], [2.0], [1.0], [4.0], [13.0]], "epochs": 200, "lr": 0.01},
    {"model": {"kind": "mlp", "hidden": [8, 8], "activation": "relu"},
     "x": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0]], "y": [[1.0], [2.0], [3.0], [5.0]],
     "epochs": 50, "standardize": True},
    {"model": "logistic", "x": [[-2.0], [-1.0], [1.0], [2.0]], "y": [[0], [0], [1], [1]],
     "epochs": 50, "lr": 0.5},
]


@pytest.mark.parametrize("body", KINDS, ids=["polynomial", "mlp", "logistic"])
def test_the_predictor_serves_every_kind_in_numpy(client, services, run_queued, body):
    r = client.post("/v1/jobs", json={"seed": 0, **body})
    assert r.status_code == 202, r.text
    assert run_queued() == ["succeeded"]
    model_id = client.get(f"/v1/jobs/{r.json()['id']}").json()["model_id"]
    row = services.meta.get_model(model_id, "default")
    loaded = services.predictor.load(model_id, "default")
    assert loaded.module is None and loaded.forward is not None  # no torch module built
    x = np.array(body["x"], np.float32) + 0.25
    # the torch module from the same checkpoint: what the predictor served before numpy
    from service.serving.predictor import _build_module

    module_served = type(loaded)(**{**loaded.__dict__, "forward": None,
                                    "module": _build_module(row, dict(loaded.state))})
    expected = module_served.infer(x)
    got = client.post(f"/v1/models/{model_id}/predict", json={"x": x.tolist()}).json()
    scale = max(1.0, float(np.abs(expected.y).max()))
    np.testing.assert_allclose(got["y"], expected.y, rtol=0, atol=1e-6 * scale)
    if expected.probabilities is not None:
        assert got["labels"] == expected.labels.tolist()
        np.testing.assert_allclose(got["probabilities"], expected.probabilities, atol=1e-6)
