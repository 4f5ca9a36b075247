"""Model kinds: an mlp has no single weight matrix; standardization statistics per model;
where early stopping ended a job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a column's nullability in place (alembic copies the table)
    with op.batch_alter_table("models") as batch:
        batch.alter_column("weight", existing_type=sa.JSON(), nullable=True)
        batch.add_column(sa.Column("normalization", sa.JSON(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("stopped_early", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stopped_early")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("normalization")
        batch.alter_column("weight", existing_type=sa.JSON(), nullable=False)
