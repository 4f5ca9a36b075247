"""PyTorch model definitions: a config dataclass and an nn.Module per kind, in a registry.

Nothing here imports the service.
"""

from models.linear import LinearConfig, LinearModel
from models.registry import ModelKind, build_model, get_kind, kinds

__all__ = ["LinearConfig", "LinearModel", "ModelKind", "build_model", "get_kind", "kinds"]
