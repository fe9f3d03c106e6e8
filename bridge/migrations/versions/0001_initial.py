"""Initial schema: bindings, conversations, replies, processed_events, audit_log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bindings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("workspace", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("bound_by", sa.String(), nullable=False),
        sa.Column("bound_at", _tz(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bindings"),
        sa.UniqueConstraint(
            "platform", "workspace", "channel", name="uq_bindings_platform_workspace_channel"
        ),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("workspace", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("thread", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.UniqueConstraint(
            "platform",
            "workspace",
            "channel",
            "thread",
            name="uq_conversations_platform_workspace_channel_thread",
        ),
    )
    op.create_table(
        "replies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("workspace", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("thread", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("inbound_event_id", sa.String(), nullable=True),
        sa.Column("message_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trace_id", sa.String(), nullable=True),
        sa.Column("conversation_id", sa.String(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(), nullable=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("lease_until", _tz(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("finished_at", _tz(), nullable=True),
        sa.CheckConstraint(
            "status IN ('streaming', 'done', 'failed', 'stopped', 'interrupted')",
            name="ck_replies_status",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_replies"),
    )
    op.create_index(
        "ix_replies_platform_workspace_channel_thread_created_at",
        "replies",
        ["platform", "workspace", "channel", "thread", "created_at"],
    )
    op.create_index(
        "ix_replies_platform_workspace_channel_created_at",
        "replies",
        ["platform", "workspace", "channel", "created_at"],
    )
    op.create_index("ix_replies_status_owner", "replies", ["status", "owner"])
    op.create_table(
        "processed_events",
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("received_at", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "event_id", name="pk_processed_events"),
    )
    op.create_index("ix_processed_events_received_at", "processed_events", ["received_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _tz(), nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("workspace", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index(
        "ix_audit_log_platform_workspace_channel_at",
        "audit_log",
        ["platform", "workspace", "channel", "at"],
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("processed_events")
    op.drop_table("replies")
    op.drop_table("conversations")
    op.drop_table("bindings")
