"""Typed-column test data (service/data/table.py): small plain functions, and a way to store
a Table as a dataset without the upload path."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from service.data.table import Column, Table


def numeric(name: str, values: list[float | None]) -> Column:
    return Column(name, "numeric", np.array([np.nan if v is None else v for v in values],
                                            np.float32))


def boolean(name: str, values: list[bool | None]) -> Column:
    return Column(name, "boolean", np.array([np.nan if v is None else float(v)
                                             for v in values], np.float32))


def categorical(name: str, values: list[str | None]) -> Column:
    levels = tuple(sorted({v for v in values if v is not None}))
    index = {lv: i for i, lv in enumerate(levels)}
    return Column(name, "categorical",
                  np.array([-1 if v is None else index[v] for v in values], np.int32), levels)


def houses(n: int = 60, seed: int = 0, noise: float = 0.0) -> Table:
    """sqft (some blank), city (3 levels, one rare), has_garage (some blank) -> price."""
    rng = np.random.default_rng(seed)
    sqft = rng.uniform(50, 200, n)
    cities = rng.choice(["Lyon", "Paris", "Nice"], n, p=[0.5, 0.45, 0.05])
    garage = rng.random(n) < 0.4
    price = (3.0 * sqft + np.select([cities == "Paris", cities == "Lyon"], [150.0, 60.0], 20.0)
             + 25.0 * garage + noise * rng.standard_normal(n))
    sqft_cells: list[float | None] = [float(v) for v in sqft]
    garage_cells: list[bool | None] = [bool(v) for v in garage]
    for i in range(3, n, 11):
        sqft_cells[i] = None
    for i in range(5, n, 13):
        garage_cells[i] = None
    return Table([numeric("sqft", sqft_cells), categorical("city", list(cities)),
                  boolean("has_garage", garage_cells)],
                 [numeric("price", [float(v) for v in price])], "houses")


def penguins_csv() -> Path:
    import palmerpenguins

    return Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


def read_penguins() -> dict[str, list[Any]]:
    """penguins.csv as columns: numbers as floats, "NA" as None, text as str."""
    with open(penguins_csv(), newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list[Any]] = {}
    for name in rows[0]:
        cells = [r[name] for r in rows]
        try:
            out[name] = [None if c == "NA" else float(c) for c in cells]
        except ValueError:
            out[name] = [None if c == "NA" else c for c in cells]
    return out


def store_table(services: Any, table: Table, tenant: str = "default") -> str:
    """The Table stored as a dataset the way an upload stores one; returns its id."""
    from service.data.datasets import store_table as store

    row, _ = store(services.meta, services.artifacts, table, tenant)
    return row.id
