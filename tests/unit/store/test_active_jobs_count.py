"""A submit counts its tenant's active jobs (the ``max_active_jobs`` limit) inside its write
transaction: the count reads an index of (tenant, status), not every job the tenant ever
ran, so a submit costs the same after a thousand finished jobs as after none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from service.store.metadata import MetadataStore
from tests.unit.store.test_dataset_jobs import add_dataset


def test_a_submit_counts_the_active_jobs_from_the_index_alone(tmp_path: Path):
    meta = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    meta.create_schema()
    dataset = add_dataset(meta)
    for _ in range(3):
        meta.create_job(tenant="default", dataset_id=dataset, spec={}, device="cpu", epochs=1)
    counts: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
             executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT COUNT"):
            counts.append((statement, parameters))

    event.listen(meta.engine, "before_cursor_execute", seen)
    try:
        meta.create_job(tenant="default", dataset_id=dataset, spec={}, device="cpu",
                        epochs=1, max_active=10)
    finally:
        event.remove(meta.engine, "before_cursor_execute", seen)
    assert len(counts) == 1, counts  # the limit's count, the one query this is about
    statement, parameters = counts[0]
    with meta.engine.connect() as conn:  # SQLite's plan for that very statement
        plan = " ".join(row[-1] for row in conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {statement}", tuple(parameters)))
    assert "COVERING INDEX ix_jobs_tenant_status" in plan, plan
    assert meta.count_active_jobs("default") == 4
    meta.dispose()
