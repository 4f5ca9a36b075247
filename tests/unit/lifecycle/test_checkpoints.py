"""The checkpoint format read back: the format versions and each kind's tensors."""

from __future__ import annotations

import pytest

from models import build_model
from service.lifecycle.checkpoints import FORMATS, expected_shapes
from service.worker.runner import CHECKPOINT_FORMAT


def test_the_format_the_worker_writes_is_one_import_reads():
    assert CHECKPOINT_FORMAT in FORMATS


@pytest.mark.parametrize("config", [
    {"kind": "linear", "in_features": 3, "out_features": 2},
    {"kind": "linear", "in_features": 3, "out_features": 1, "bias": False},
    {"kind": "logistic", "in_features": 2, "out_features": 4, "classes": 4},
    {"kind": "polynomial", "in_features": 3, "out_features": 1, "degree": 3,
     "interactions": True},
    {"kind": "mlp", "in_features": 2, "out_features": 2, "hidden": [5, 4, 3]},
    {"kind": "mlp", "in_features": 2, "out_features": 1, "hidden": [5], "bias": False},
])
def test_expected_shapes_are_the_modules_state_dict(config):
    module = build_model(**config)
    kind = config.pop("kind")
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert expected_shapes(kind, config) == want
