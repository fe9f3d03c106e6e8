"""Persistence for the bridge: bindings, conversations, replies, de-duplication, audit."""

from bridge.store.store import (
    AuditEntry,
    Binding,
    Conversation,
    QueuedReply,
    ReplyNotFound,
    ReplyRecord,
    Store,
    StoreUnavailable,
    UsageSummary,
)

__all__ = [
    "AuditEntry",
    "Binding",
    "Conversation",
    "QueuedReply",
    "ReplyNotFound",
    "ReplyRecord",
    "Store",
    "StoreUnavailable",
    "UsageSummary",
]
