import pytest
import torch
from torch import nn

from models import build_model, get_kind, kinds
from models.linear import LinearConfig, LinearModel


def test_linear_init_matches_seeded_nn_linear():
    torch.manual_seed(7)
    ref = nn.Linear(3, 2)
    torch.manual_seed(7)
    model = build_model("linear", in_features=3, out_features=2, bias=True)
    assert torch.equal(model.linear.weight, ref.weight)
    assert torch.equal(model.linear.bias, ref.bias)


def test_forward_shape_and_no_bias():
    model = LinearModel(LinearConfig(in_features=4, out_features=3, bias=False))
    assert model.linear.bias is None
    assert model(torch.zeros(5, 4)).shape == (5, 3)


def test_registry_lists_and_rejects_unknown():
    assert "linear" in kinds()
    assert get_kind("linear").config_cls is LinearConfig
    with pytest.raises(KeyError, match="unknown model kind"):
        get_kind("transformer")
