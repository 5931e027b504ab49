"""learned examples: what the reps' "Wrong department?" corrections teach routing

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 00:00:00

Issue 18: each corrected call's words and right department, for the flow it went through, with who taught it and
when; never deleted (an example an admin removes, or a correction taken back, is marked removed). Which of them
routing uses is decided by the guard in ``ivr_flows.learning`` whenever a flow's classifier is built.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "learned_examples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flow_name", sa.String(length=100), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=False),
        sa.Column("detected_department", sa.String(length=64), nullable=True),
        sa.Column("taught_by_rep_id", sa.Integer(), nullable=False),
        sa.Column("taught_by_supervisor", sa.Boolean(), nullable=False),
        sa.Column("taught_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(length=100), nullable=True),
        sa.Column("removed_reason", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"]),
        sa.ForeignKeyConstraint(["taught_by_rep_id"], ["reps.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("interaction_id"),
    )
    with op.batch_alter_table("learned_examples", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_learned_examples_flow_name"), ["flow_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("learned_examples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_learned_examples_flow_name"))
    op.drop_table("learned_examples")
