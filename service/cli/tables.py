"""Tables that fit the terminal without wrapping an id: an id is copied into the next
command, so it is shown whole on one line. When a table is wider than the terminal, the
least useful columns go first; only when the ids alone do not fit are they cut in the middle
(``job_019a…3f2c``), which keeps the prefix and the random tail that tell them apart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GAP = 2
"""Spaces between two columns."""
ELLIPSIS = "\u2026"


@dataclass(frozen=True)
class Column:
    header: str
    id: bool = False
    """Shown whole and never wrapped (cut in the middle only as the last resort)."""
    drop: int = 0
    """0: always shown; otherwise dropped, highest first, until the table fits."""
    max_width: int | None = None
    """Longer values are cut at the end with an ellipsis (numbers, lists, names)."""


def cut_end(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + ELLIPSIS


def cut_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: its start and end around an ellipsis."""
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + ELLIPSIS + text[len(text) - tail:]


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int
        ) -> tuple[list[Column], list[list[str]]]:
    """The columns that fit in ``width`` characters and the rows' cells cut to them."""
    cells = [[cut_end(v, c.max_width) if c.max_width else v for c, v in zip(columns, r,
                                                                            strict=True)]
             for r in rows]
    keep = list(range(len(columns)))

    def widths() -> dict[int, int]:
        return {i: max([len(columns[i].header), *(len(r[i]) for r in cells)]) for i in keep}

    def total(w: dict[int, int]) -> int:
        return sum(w.values()) + GAP * (len(w) - 1)

    while total(widths()) > width:
        droppable = [i for i in keep if columns[i].drop]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda i: columns[i].drop))
    w = widths()
    ids = [i for i in keep if columns[i].id]
    if ids and total(w) > width:
        others = sum(w[i] for i in keep if i not in ids) + GAP * (len(keep) - 1)
        room = max((width - others) // len(ids), 7)
        for r in cells:
            for i in ids:
                r[i] = cut_middle(r[i], room)
    return [columns[i] for i in keep], [[r[i] for i in keep] for r in cells]


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                console: Any = None) -> None:
    """Print ``rows`` under ``title`` to stdout (or ``console``), fitted to its width."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    shown, cells = fit(columns, rows, console.width)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, GAP // 2),
                  show_edge=False, title_justify="left", collapse_padding=True)
    for c, i in zip(shown, range(len(shown)), strict=True):
        width = max([len(c.header), *(len(r[i]) for r in cells)])
        table.add_column(c.header, no_wrap=True, overflow="ellipsis",
                         min_width=width if c.id else None)
    for r in cells:
        table.add_row(*r)
    console.print(table)
