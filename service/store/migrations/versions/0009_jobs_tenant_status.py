"""A tenant's active jobs counted from an index on (tenant, status): every submit counts them
in its write transaction (the max_active_jobs limit), and the index on the tenant alone made
that count read every job the tenant had ever run. The new index serves what the old one
did (its first column is the tenant), which goes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_tenant_status", "jobs", ["tenant", "status"])
    op.drop_index("ix_jobs_tenant", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_tenant", "jobs", ["tenant"])
    op.drop_index("ix_jobs_tenant_status", table_name="jobs")
