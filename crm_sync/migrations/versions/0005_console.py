"""console: roles, passwords, away reasons, wrap-up and corrections, task claims, audit, sessions, sign-in links

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 00:07:19.334394

The rep console (issue 17): reps get a role (rep or supervisor), an optional Argon2 password hash and an away
reason; an interaction gets the rep's wrap-up (disposition, notes) and a department correction next to what the
flow detected; a task gets its claim and its closing; and new tables keep the audit trail, console sessions,
one-time sign-in links and failed sign-in counts. Issue 16: every flow version that went live is kept
(``flow_versions``), so a worker that starts while a flow file is broken serves the last good one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flow_versions",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_live_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    with op.batch_alter_table("flow_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_flow_versions_name"), ["name"], unique=False)
    op.create_table(
        "login_throttles",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_rep_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["actor_rep_id"], ["reps.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_actor_rep_id"), ["actor_rep_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_subject"), ["subject"], unique=False)

    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("rep_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["rep_id"], ["reps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_sessions_rep_id"), ["rep_id"], unique=False)

    op.create_table(
        "login_links",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("rep_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["rep_id"], ["reps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("login_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_links_rep_id"), ["rep_id"], unique=False)

    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("disposition", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("wrap_up_notes", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("wrapped_up_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("wrapped_up_by_rep_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("corrected_department", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("corrected_by_rep_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_interactions_corrected_by_rep_id_reps", "reps", ["corrected_by_rep_id"], ["id"])
        batch_op.create_foreign_key(
            "fk_interactions_wrapped_up_by_rep_id_reps", "reps", ["wrapped_up_by_rep_id"], ["id"]
        )

    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_callbacks_task_id_tasks", "tasks", ["task_id"], ["id"], ondelete="SET NULL")

    with op.batch_alter_table("reps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), server_default="rep", nullable=False))
        batch_op.add_column(sa.Column("password_hash", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("away_reason", sa.String(length=40), nullable=True))

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by_rep_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("closed_by_rep_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("close_note", sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f("ix_tasks_claimed_by_rep_id"), ["claimed_by_rep_id"], unique=False)
        batch_op.create_foreign_key("fk_tasks_claimed_by_rep_id_reps", "reps", ["claimed_by_rep_id"], ["id"])
        batch_op.create_foreign_key("fk_tasks_closed_by_rep_id_reps", "reps", ["closed_by_rep_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("flow_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flow_versions_name"))
    op.drop_table("flow_versions")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_constraint("fk_tasks_closed_by_rep_id_reps", type_="foreignkey")
        batch_op.drop_constraint("fk_tasks_claimed_by_rep_id_reps", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_tasks_claimed_by_rep_id"))
        batch_op.drop_column("close_note")
        batch_op.drop_column("closed_by_rep_id")
        batch_op.drop_column("closed_at")
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("claimed_by_rep_id")

    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.drop_constraint("fk_callbacks_task_id_tasks", type_="foreignkey")
        batch_op.drop_column("task_id")

    with op.batch_alter_table("reps", schema=None) as batch_op:
        batch_op.drop_column("away_reason")
        batch_op.drop_column("password_hash")
        batch_op.drop_column("role")

    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_constraint("fk_interactions_wrapped_up_by_rep_id_reps", type_="foreignkey")
        batch_op.drop_constraint("fk_interactions_corrected_by_rep_id_reps", type_="foreignkey")
        batch_op.drop_column("corrected_by_rep_id")
        batch_op.drop_column("corrected_at")
        batch_op.drop_column("corrected_department")
        batch_op.drop_column("wrapped_up_by_rep_id")
        batch_op.drop_column("wrapped_up_at")
        batch_op.drop_column("wrap_up_notes")
        batch_op.drop_column("disposition")
        batch_op.drop_column("updated_at")

    with op.batch_alter_table("login_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_links_rep_id"))

    op.drop_table("login_links")
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_sessions_rep_id"))

    op.drop_table("console_sessions")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_subject"))
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))
        batch_op.drop_index(batch_op.f("ix_audit_events_actor_rep_id"))

    op.drop_table("audit_events")
    op.drop_table("login_throttles")
