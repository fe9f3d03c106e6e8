"""Several replicas: queued replies keep their message, leases are swept, Stop crosses replicas.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_STATUSES = ("streaming", "done", "failed", "stopped", "interrupted")
NEW_STATUSES = ("queued", *OLD_STATUSES)


def _status_check(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def _change(statuses: tuple[str, ...], agent_nullable: bool) -> None:
    with op.batch_alter_table("replies") as batch:
        batch.drop_constraint("ck_replies_status", type_="check")
        batch.create_check_constraint(op.f("ck_replies_status"), _status_check(statuses))
        batch.alter_column("agent_id", existing_type=sa.String(), nullable=agent_nullable)


def upgrade() -> None:
    _change(NEW_STATUSES, agent_nullable=True)
    with op.batch_alter_table("replies") as batch:
        batch.add_column(sa.Column("inbound", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("stop_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_replies_status_lease_until", ["status", "lease_until"])


def downgrade() -> None:
    op.execute("UPDATE replies SET status = 'interrupted' WHERE status = 'queued'")
    op.execute("UPDATE replies SET agent_id = '' WHERE agent_id IS NULL")
    with op.batch_alter_table("replies") as batch:
        batch.drop_index("ix_replies_status_lease_until")
        batch.drop_column("stop_requested_at")
        batch.drop_column("inbound")
    _change(OLD_STATUSES, agent_nullable=False)
