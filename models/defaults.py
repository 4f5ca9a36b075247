"""Each kind's default options, in one place (no torch here): the config dataclasses, the
registry's parameter counts and the training spec all read them."""

from typing import Final

POLYNOMIAL_DEGREE = 2
POLYNOMIAL_INTERACTIONS = False
MLP_HIDDEN: tuple[int, ...] = (32, 32)
MLP_ACTIVATION: Final = "tanh"  # Final: its type is Literal["tanh"], as the spec's field wants
