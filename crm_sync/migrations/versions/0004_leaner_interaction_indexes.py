"""leaner interaction indexes: drop the ones a prefix covers, make the finished-call ones partial

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 06:45:00.000000

Why: on SQLite every index page a commit dirties is one more WAL frame written, and a new call dirtied ten pages
(see crm_sync/models.py, Interaction.__table_args__). Dropped: ix_interactions_status and ix_interactions_queue
(ix_interactions_line starts with the same columns), ix_interactions_customer_id (ix_interactions_customer_started
starts with it). Partial: ix_interactions_department_ended (finished calls) and ix_interactions_live_call_sid (calls
we called back).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENDED = sa.text("ended_at IS NOT NULL")
_CALLED_BACK = sa.text("live_call_sid IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_interactions_status")
        batch_op.drop_index("ix_interactions_queue")
        batch_op.drop_index("ix_interactions_customer_id")
        batch_op.drop_index("ix_interactions_department_ended")
        batch_op.drop_index("ix_interactions_live_call_sid")
        batch_op.create_index(
            "ix_interactions_department_ended",
            ["department", "ended_at"],
            unique=False,
            sqlite_where=_ENDED,
            postgresql_where=_ENDED,
        )
        batch_op.create_index(
            "ix_interactions_live_call_sid",
            ["live_call_sid"],
            unique=False,
            sqlite_where=_CALLED_BACK,
            postgresql_where=_CALLED_BACK,
        )


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_interactions_live_call_sid")
        batch_op.drop_index("ix_interactions_department_ended")
        batch_op.create_index("ix_interactions_live_call_sid", ["live_call_sid"], unique=False)
        batch_op.create_index("ix_interactions_department_ended", ["department", "ended_at"], unique=False)
        batch_op.create_index("ix_interactions_customer_id", ["customer_id"], unique=False)
        batch_op.create_index("ix_interactions_queue", ["status", "department", "enqueued_at"], unique=False)
        batch_op.create_index("ix_interactions_status", ["status"], unique=False)
