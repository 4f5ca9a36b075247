"""The expanded inputs of a polynomial model, by count and by name (no torch needed)."""

from __future__ import annotations

from itertools import combinations


def term_count(in_features: int, degree: int, interactions: bool) -> int:
    pairs = in_features * (in_features - 1) // 2 if interactions else 0
    return in_features * degree + pairs


def term_names(feature_names: list[str], degree: int, interactions: bool) -> list[str]:
    """Names of the expanded terms in the layer's column order: x, x^2, ..., then x*z."""
    names = [n if p == 1 else f"{n}^{p}" for n in feature_names for p in range(1, degree + 1)]
    if interactions:
        names += [f"{a}*{b}" for a, b in combinations(feature_names, 2)]
    return names
