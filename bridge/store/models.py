"""SQLAlchemy table models. Migration 0001 must create exactly this schema (a test checks it).

Timestamps are stored as UTC and always read back timezone-aware, on SQLite too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

REPLY_STATUSES = ("queued", "streaming", "done", "failed", "stopped", "interrupted")
"""`queued` and `streaming` rows are unfinished: each is held under its replica's lease."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that SQLite cannot get wrong: stores UTC, returns aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class BindingRow(Base):
    """A channel bound to an agent by an admin; `options` holds per-channel switches."""

    __tablename__ = "bindings"
    __table_args__ = (UniqueConstraint("platform", "workspace", "channel"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String)
    workspace: Mapped[str] = mapped_column(String)
    channel: Mapped[str] = mapped_column(String)
    agent_id: Mapped[str] = mapped_column(String)
    bound_by: Mapped[str] = mapped_column(String)
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    options: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True), default=dict)


class ConversationRow(Base):
    """One upstream conversation per thread key; the thread keeps the agent it started with."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("platform", "workspace", "channel", "thread"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String)
    workspace: Mapped[str] = mapped_column(String)
    channel: Mapped[str] = mapped_column(String)
    thread: Mapped[str] = mapped_column(String)
    agent_id: Mapped[str] = mapped_column(String)
    conversation_id: Mapped[str | None] = mapped_column(String, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReplyRow(Base):
    """One bot reply (possibly several platform messages).

    A row is `queued` from the moment its message is accepted (with the message in `inbound`, so
    another replica can answer it if this one dies), `streaming` once answering starts, then
    finished. Unfinished rows are held by `owner` until `lease_until`; the owner renews the lease.
    """

    __tablename__ = "replies"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in REPLY_STATUSES) + ")", name="status"
        ),
        Index(None, "platform", "workspace", "channel", "thread", "created_at"),
        Index(None, "platform", "workspace", "channel", "created_at"),
        Index(None, "status", "owner"),
        Index(None, "status", "lease_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String)
    workspace: Mapped[str] = mapped_column(String)
    channel: Mapped[str] = mapped_column(String)
    thread: Mapped[str] = mapped_column(String)
    agent_id: Mapped[str | None] = mapped_column(String, nullable=True)
    """Chosen when answering starts (None while queued)."""
    inbound_event_id: Mapped[str | None] = mapped_column(String, nullable=True)
    message_ids: Mapped[list[str]] = mapped_column(JSON(none_as_null=True), default=list)
    status: Mapped[str] = mapped_column(String(16))
    trace_id: Mapped[str | None] = mapped_column(String, nullable=True)
    conversation_id: Mapped[str | None] = mapped_column(String, nullable=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String, nullable=True)
    owner: Mapped[str | None] = mapped_column(String, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    """The reply as last shown (text, tools, sources), so a crash can be finalized without losing it."""
    inbound: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    """The message being answered (user, text, from_bot), so a survivor can answer a queued one."""
    stop_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Set when someone pressed Stop on a replica that is not streaming this reply."""


class ProcessedEventRow(Base):
    """Inbound deliveries already handled; the primary key makes a retry's claim fail."""

    __tablename__ = "processed_events"
    __table_args__ = (Index(None, "received_at"),)

    platform: Mapped[str] = mapped_column(String, primary_key=True)
    event_id: Mapped[str] = mapped_column(String, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditRow(Base):
    """Who changed what (bindings, resets); append-only."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index(None, "at"),
        Index(None, "platform", "workspace", "channel", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    platform: Mapped[str] = mapped_column(String)
    workspace: Mapped[str] = mapped_column(String)
    channel: Mapped[str] = mapped_column(String)
    actor: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True), default=dict)


metadata = Base.metadata
