"""PyTorch model definitions: a config dataclass and an nn.Module per kind, in a registry.

Nothing here imports the service; importing the package (the registry) does not import
torch: ``from models.linear import LinearModel`` does.
"""

from models.registry import ModelKind, build_model, get_kind, kinds

__all__ = ["ModelKind", "build_model", "get_kind", "kinds"]
