"""Passage sentences' vectors, stored at ingestion for extractive answers.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sentence_vectors",
        sa.Column("embedder", sa.String(200), primary_key=True),
        sa.Column("document_id", sa.String(200), primary_key=True),
        sa.Column("text_hash", sa.String(64), primary_key=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_sentence_vectors_lookup", "sentence_vectors", ["embedder", "text_hash"])


def downgrade() -> None:
    op.drop_table("sentence_vectors")
