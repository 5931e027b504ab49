"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 13:28:43.825538
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("custom_fields", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customers_phone"), ["phone"], unique=True)

    op.create_table(
        "reps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "offline",
                "available",
                "reserved",
                "on_call",
                "away",
                name="repstate",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("reps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reps_state"), ["state"], unique=False)

    op.create_table(
        "interactions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("caller_number", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("flow_name", sa.String(length=100), nullable=False),
        sa.Column("flow_version", sa.String(length=64), nullable=False),
        sa.Column("flow_state", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "in_flow",
                "offering",
                "queued",
                "connected",
                "ended",
                name="interactionstatus",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        sa.Column("issue_text", sa.Text(), nullable=True),
        sa.Column("capture_method", sa.String(length=16), nullable=True),
        sa.Column("speech_confidence", sa.Float(), nullable=True),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("rep_id", sa.Integer(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hold_seconds", sa.Integer(), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "answered",
                "abandoned",
                "no-rep",
                "failed",
                "voicemail",
                name="outcome",
                native_enum=False,
                length=20,
            ),
            nullable=True,
        ),
        sa.Column("recording_url", sa.String(length=500), nullable=True),
        sa.Column("last_call_status", sa.String(length=20), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rep_id"],
            ["reps.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("call_sid"),
    )
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_interactions_caller_number"), ["caller_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_interactions_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index("ix_interactions_customer_started", ["customer_id", "started_at"], unique=False)
        batch_op.create_index("ix_interactions_queue", ["status", "department", "enqueued_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_interactions_status"), ["status"], unique=False)

    op.create_table(
        "rep_skills",
        sa.Column("rep_id", sa.Integer(), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["rep_id"], ["reps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("rep_id", "department"),
    )
    with op.batch_alter_table("rep_skills", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rep_skills_department"), ["department"], unique=False)

    op.create_table(
        "offers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=False),
        sa.Column("rep_id", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "ringing",
                "accepted",
                "declined",
                "cancelled",
                "ended",
                name="offerstate",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["rep_id"],
            ["reps.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offers_interaction_id"), ["interaction_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_offers_rep_id"), ["rep_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offers_rep_id"))
        batch_op.drop_index(batch_op.f("ix_offers_interaction_id"))

    op.drop_table("offers")
    with op.batch_alter_table("rep_skills", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rep_skills_department"))

    op.drop_table("rep_skills")
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interactions_status"))
        batch_op.drop_index("ix_interactions_queue")
        batch_op.drop_index("ix_interactions_customer_started")
        batch_op.drop_index(batch_op.f("ix_interactions_customer_id"))
        batch_op.drop_index(batch_op.f("ix_interactions_caller_number"))

    op.drop_table("interactions")
    with op.batch_alter_table("reps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reps_state"))

    op.drop_table("reps")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customers_phone"))

    op.drop_table("customers")
