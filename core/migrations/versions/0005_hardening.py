"""Resumable jobs and metadata updates in place: who runs a job, where each file is read from and
the metadata given with it, and a document's metadata change on its way to the chunks.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingest_jobs", sa.Column("worker", sa.String(200), nullable=True))
    op.add_column("ingest_job_documents", sa.Column("path", sa.Text(), nullable=True))
    op.add_column("ingest_job_documents", sa.Column("entry", sa.JSON(), nullable=True))
    op.add_column("documents", sa.Column("pending_update", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("documents", "pending_update")
    op.drop_column("ingest_job_documents", "entry")
    op.drop_column("ingest_job_documents", "path")
    op.drop_column("ingest_jobs", "worker")
