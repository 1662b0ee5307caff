"""Saved answers, their citations and shares; how many a job's documents flagged for review.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saved_answers",
        sa.Column("saved_id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("parts", sa.JSON(), nullable=False),
        sa.Column("query_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("checked_at", UTCDateTime(), nullable=True),
        sa.Column("reviewed_at", UTCDateTime(), nullable=True),
        sa.Column("reviewed_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_saved_answers_owner", "saved_answers", ["owner"])
    op.create_table(
        "saved_citations",
        sa.Column(
            "saved_id",
            sa.String(36),
            sa.ForeignKey("saved_answers.saved_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("n", sa.Integer(), primary_key=True),
        sa.Column("document_id", sa.String(200), nullable=False),
        sa.Column("document_title", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("section", sa.Text(), nullable=False),
        sa.Column("section_path", sa.Text(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("chunk_id", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("quote", sa.Text(), nullable=False),
        sa.Column("access_groups", sa.JSON(), nullable=False),
        sa.Column("check_status", sa.String(16), nullable=False),
        sa.Column("checked_hash", sa.String(64), nullable=True),
        sa.Column("now_section", sa.Text(), nullable=True),
        sa.Column("now_text", sa.Text(), nullable=True),
        sa.Column("diff", sa.JSON(), nullable=False),
    )
    op.create_index("ix_saved_citations_document_id", "saved_citations", ["document_id"])
    op.create_table(
        "saved_shares",
        sa.Column(
            "saved_id",
            sa.String(36),
            sa.ForeignKey("saved_answers.saved_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("group_name", sa.String(200), primary_key=True),
    )
    op.create_index("ix_saved_shares_group", "saved_shares", ["group_name"])
    with op.batch_alter_table("ingest_job_documents") as batch:
        batch.add_column(
            sa.Column("flagged_answers", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("ingest_job_documents") as batch:
        batch.drop_column("flagged_answers")
    op.drop_table("saved_shares")
    op.drop_table("saved_citations")
    op.drop_table("saved_answers")
