"""Mixed-column datasets (``Table``, ``Column``): their format lives with the artifacts that
store them (service/store/tabular.py); data/ and the layers above import them from here."""

from service.store.tabular import (
    FORMAT,
    KINDS,
    Column,
    ColumnKind,
    Table,
    is_table,
    safetensors_metadata,
    table_bytes,
    table_from_bytes,
    table_from_tensors,
)

__all__ = ["FORMAT", "KINDS", "Column", "ColumnKind", "Table", "is_table",
           "safetensors_metadata", "table_bytes", "table_from_bytes", "table_from_tensors"]
