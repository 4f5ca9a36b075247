"""The bench's table: one row per measurement, A (fitserve) against B (its baseline)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class Row:
    name: str
    a: str
    b: str
    ratio: float
    target: str
    ok: bool


def ratio_row(name: str, a: list[float], b: list[float], unit: str, target: str,
              le: float | None = None, ge: float | None = None) -> Row:
    """The median of the per-round ratios A/B, with the medians of A and B beside it."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    r = statistics.median(ratios)
    ok = (le is None or r <= le) and (ge is None or r >= ge)

    def fmt(v: float) -> str:
        return f"{v:.4g} {unit}"

    return Row(name, fmt(statistics.median(a)), fmt(statistics.median(b)), r, target, ok)


class Table(list):  # type: ignore[type-arg]
    """Rows print as they are measured, so a failure later loses none."""

    def append(self, row: Row) -> None:
        if not self:
            print("| row | fitserve (A) | baseline (B) | A/B | target | met |")
            print("|---|---|---|---|---|---|")
        print(f"| {row.name} | {row.a} | {row.b} | {row.ratio:.3g} | {row.target} | "
              f"{'yes' if row.ok else 'NO'} |", flush=True)
        super().append(row)
