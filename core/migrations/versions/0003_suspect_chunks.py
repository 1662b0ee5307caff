"""Chunks the prompt-injection screen flagged, per document of an ingestion job.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingest_job_documents", sa.Column("suspect_chunks", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("ingest_job_documents", "suspect_chunks")
