"""Model lifecycle: evaluations; a model's parent (warm start) and origin (import); an
imported model has no job or dataset of its own.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
# after 0005 (sweeps), which is in the tree beside it: two heads would stop every start
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("task", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("rows_used", sa.Integer(), nullable=False),
        sa.Column("refused", sa.JSON(), nullable=False),
        sa.Column("ignored_columns", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("plot_points", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_evaluations_tenant", "evaluations", ["tenant"])
    op.create_index("ix_evaluations_model_id", "evaluations", ["model_id"])
    # batch mode: SQLite cannot ALTER a column's nullability in place (alembic copies the table)
    with op.batch_alter_table("models") as batch:
        batch.alter_column("job_id", existing_type=sa.String(length=40), nullable=True)
        batch.alter_column("dataset_id", existing_type=sa.String(length=40), nullable=True)
        batch.add_column(sa.Column("parent_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("origin", sa.JSON(), nullable=True))
        batch.create_index("ix_models_parent_id", ["parent_id"])


def downgrade() -> None:
    # imported models have neither job nor dataset: the older schema cannot hold them
    op.execute(sa.text("DELETE FROM models WHERE job_id IS NULL OR dataset_id IS NULL"))
    with op.batch_alter_table("models") as batch:
        batch.drop_index("ix_models_parent_id")
        batch.drop_column("origin")
        batch.drop_column("parent_id")
        batch.alter_column("dataset_id", existing_type=sa.String(length=40), nullable=False)
        batch.alter_column("job_id", existing_type=sa.String(length=40), nullable=False)
    op.drop_index("ix_evaluations_model_id", table_name="evaluations")
    op.drop_index("ix_evaluations_tenant", table_name="evaluations")
    op.drop_table("evaluations")
