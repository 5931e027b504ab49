"""presence leases and wrap-up, skill levels, the priority line, callbacks, rep-to-rep hand-offs

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 05:02:31.777812
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# New NOT NULL columns get a server default so that rows written before this revision stay valid.


def upgrade() -> None:
    op.create_table(
        "callbacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("from_number", sa.String(length=32), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "waiting",
                "calling",
                "connected",
                "done",
                "missed",
                "cancelled",
                name="callbackstate",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("call_sid", sa.String(length=64), nullable=True),
        sa.Column("offer_id", sa.Integer(), nullable=True),
        sa.Column("last_result", sa.String(length=32), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("interaction_id"),
    )
    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_callbacks_state"), ["state"], unique=False)

    op.create_table(
        "handoffs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=False),
        sa.Column("from_rep_id", sa.Integer(), nullable=False),
        sa.Column("to_rep_id", sa.Integer(), nullable=True),
        sa.Column("to_department", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "moving",
                "dialing",
                "consulting",
                "completed",
                "failed",
                "cancelled",
                name="handoffstate",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("conference", sa.String(length=64), nullable=False),
        sa.Column("conference_sid", sa.String(length=64), nullable=True),
        sa.Column("caller_call_sid", sa.String(length=64), nullable=False),
        sa.Column("from_call_sid", sa.String(length=64), nullable=True),
        sa.Column("to_call_sid", sa.String(length=64), nullable=True),
        sa.Column("to_offer_id", sa.Integer(), nullable=True),
        sa.Column("caller_joined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("from_joined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("from_left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("to_joined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["from_rep_id"], ["reps.id"]),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["to_rep_id"], ["reps.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_handoffs_interaction_id"), ["interaction_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_handoffs_state"), ["state"], unique=False)

    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("called_number", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("live_call_sid", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_interactions_live_call_sid"), ["live_call_sid"], unique=False)
        batch_op.add_column(sa.Column("rank_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("priority_seconds", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("priority_reasons", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("announced_wait", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("leave_reason", sa.String(length=16), nullable=True))
        batch_op.create_index("ix_interactions_line", ["status", "department", "rank_at"], unique=False)
        batch_op.create_index("ix_interactions_department_ended", ["department", "ended_at"], unique=False)

    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rep_call_sid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("whispered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("group_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("purpose", sa.String(length=16), nullable=False, server_default="call"))
        batch_op.create_index(batch_op.f("ix_offers_group_id"), ["group_id"], unique=False)

    with op.batch_alter_table("rep_skills", schema=None) as batch_op:
        batch_op.add_column(sa.Column("level", sa.Integer(), nullable=False, server_default="5"))

    with op.batch_alter_table("reps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("current_offer_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("reserved_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("wrap_up_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("missed_offers", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column(
                "after_call_state",
                sa.Enum(
                    "offline",
                    "available",
                    "reserved",
                    "on_call",
                    "wrap_up",
                    "away",
                    name="repstate",
                    native_enum=False,
                    length=20,
                ),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("last_offered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("api_token_hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_reps_api_token_hash", ["api_token_hash"])

    # Rows from before: a caller already waiting keeps their place (rank = arrival).
    op.execute("UPDATE interactions SET rank_at = enqueued_at WHERE enqueued_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("reps", schema=None) as batch_op:
        batch_op.drop_constraint("uq_reps_api_token_hash", type_="unique")
        batch_op.drop_column("api_token_hash")
        batch_op.drop_column("last_offered_at")
        batch_op.drop_column("after_call_state")
        batch_op.drop_column("missed_offers")
        batch_op.drop_column("wrap_up_until")
        batch_op.drop_column("reserved_until")
        batch_op.drop_column("current_offer_id")

    with op.batch_alter_table("rep_skills", schema=None) as batch_op:
        batch_op.drop_column("level")

    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offers_group_id"))
        batch_op.drop_column("purpose")
        batch_op.drop_column("group_id")
        batch_op.drop_column("whispered_at")
        batch_op.drop_column("rep_call_sid")

    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_interactions_department_ended")
        batch_op.drop_index("ix_interactions_line")
        batch_op.drop_column("leave_reason")
        batch_op.drop_column("announced_wait")
        batch_op.drop_column("announced_at")
        batch_op.drop_column("priority_reasons")
        batch_op.drop_column("priority_seconds")
        batch_op.drop_column("rank_at")
        batch_op.drop_index(batch_op.f("ix_interactions_live_call_sid"))
        batch_op.drop_column("live_call_sid")
        batch_op.drop_column("called_number")

    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_handoffs_state"))
        batch_op.drop_index(batch_op.f("ix_handoffs_interaction_id"))
    op.drop_table("handoffs")

    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callbacks_state"))
    op.drop_table("callbacks")
