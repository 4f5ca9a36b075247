"""Jobs carry their task: ``train`` (every job so far) or ``predict`` (a batch prediction,
issue 15), so both kinds share one queue, claim, heartbeat, recovery and cancel.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("task", sa.String(length=16), nullable=False,
                                   server_default="train"))
        batch.create_index("ix_jobs_task", ["task"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_task")
        batch.drop_column("task")
