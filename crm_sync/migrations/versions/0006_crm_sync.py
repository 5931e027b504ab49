"""crm sync: the outbox, the contacts each CRM knows, each CRM connection's state

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:00:00

Issue 19: every change a CRM must hear of (a call that ended, its wrap-up or transcript, a task filed or closed) is
a ``crm_outbox`` row written in the same transaction as the change; delivery workers claim, send and retry them.
``crm_contacts`` maps phone numbers to the CRMs' contacts (found, created or pulled); ``crm_targets`` keeps how far
contacts were pulled and credentials a CRM refused.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crm_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.Enum("call", "task", name="syncsubject", native_enum=False, length=20), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column(
            "state",
            sa.Enum("pending", "sending", "delivered", "parked", name="outboxstate", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("remote_id", sa.String(length=64), nullable=True),
        sa.Column("covered_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("crm_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_crm_outbox_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_crm_outbox_interaction_id"), ["interaction_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_crm_outbox_task_id"), ["task_id"], unique=False)

    op.create_table(
        "crm_contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=20), nullable=False),
        sa.Column("remote_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("remote_modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("target", "remote_id", name="uq_crm_contacts_target_remote_id"),
    )
    with op.batch_alter_table("crm_contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_contacts_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index("ix_crm_contacts_target_phone", ["target", "phone"], unique=False)

    op.create_table(
        "crm_targets",
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("pulled_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pull_error", sa.Text(), nullable=True),
        sa.Column("refused_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refusal", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("crm_targets")
    with op.batch_alter_table("crm_contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_contacts_target_phone")
        batch_op.drop_index(batch_op.f("ix_crm_contacts_customer_id"))
    op.drop_table("crm_contacts")
    with op.batch_alter_table("crm_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crm_outbox_task_id"))
        batch_op.drop_index(batch_op.f("ix_crm_outbox_interaction_id"))
        batch_op.drop_index("ix_crm_outbox_due")
    op.drop_table("crm_outbox")
