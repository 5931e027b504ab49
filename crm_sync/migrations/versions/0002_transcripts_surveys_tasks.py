"""voicemail transcripts, surveys, follow-up tasks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 14:09:28.892423
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("interaction_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("state", sa.Enum("open", "done", name="taskstate", native_enum=False, length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_interaction_id"), ["interaction_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_state"), ["state"], unique=False)

    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transcript", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("transcript_engine", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("transcript_confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("transcript_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("language", sa.String(length=16), nullable=True))
        # Existing rows get an empty survey; the server default makes the NOT NULL column addable on a full table.
        batch_op.add_column(sa.Column("survey", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:

    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_column("survey")
        batch_op.drop_column("language")
        batch_op.drop_column("transcript_error")
        batch_op.drop_column("transcript_confidence")
        batch_op.drop_column("transcript_engine")
        batch_op.drop_column("transcript")

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_state"))
        batch_op.drop_index(batch_op.f("ix_tasks_interaction_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_customer_id"))

    op.drop_table("tasks")
