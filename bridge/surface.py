"""The one small interface an adapter implements, plus its optional capabilities.

Required (`Surface`): post, edit, delete, render, and the platform's limits.
Optional (`NativeStream`): a platform-native append-only stream (Slack `chat.startStream`);
the relay uses it when offered and falls back to post + scheduled edits when it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from bridge.keys import MessageRef, ThreadKey
from bridge.reply import MessagePart


class Scope(StrEnum):
    """Who shares a rate budget."""

    GLOBAL = "global"
    WORKSPACE = "workspace"
    CHANNEL = "channel"
    MESSAGE = "message"


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: `per_second` sustained, `burst` at once, shared within `scope`."""

    per_second: float
    burst: int = 1
    scope: Scope = Scope.CHANNEL


@dataclass(frozen=True, slots=True)
class SurfaceLimits:
    """What a platform allows. `max_text` is counted in the platform's own units (characters)."""

    max_text: int
    post: Rate
    edit: Rate
    append: Rate | None = None
    """Budget of `NativeStream.append_stream`, for surfaces that offer native streams."""
    stream_control: Rate | None = None
    """Budget of `start_stream`/`stop_stream`; the post budget when not given."""


class SurfaceError(Exception):
    """A platform call failed in a way the core can't fix by waiting."""


class RateLimited(SurfaceError):
    """HTTP 429 (or equivalent): wait `retry_after` seconds, then retry with the latest state."""

    def __init__(self, retry_after: float, method: str = "") -> None:
        super().__init__(f"rate limited on {method or 'a platform call'}; retry after {retry_after:.2f}s")
        self.retry_after = retry_after
        self.method = method


class MessageGone(SurfaceError):
    """The reply's message (or its thread) no longer accepts edits: deleted, archived, locked."""


class AccessDenied(SurfaceError):
    """The platform refuses this bot itself (token revoked, scope or permission missing):
    retrying or waiting cannot help; an admin must act. The message says what to fix."""


class MessageExpired(SurfaceError):
    """This message can no longer be edited, but the thread is fine (e.g. a Discord interaction
    token past 15 minutes): the core posts the part again as a new message and continues there."""


class StreamRefused(SurfaceError):
    """A native stream could not start or continue; the relay falls back to edits."""


@runtime_checkable
class Surface(Protocol):
    """A place replies appear. Adapters implement this; the core drives it."""

    platform: str
    limits: SurfaceLimits

    def render(self, part: MessagePart) -> Any:
        """Turn one message part into the platform's payload (text, blocks, embeds...)."""

    async def post(self, thread: ThreadKey, payload: Any) -> MessageRef:
        """Post a new message in the thread; return its reference."""

    async def edit(self, message: MessageRef, payload: Any) -> None:
        """Replace a posted message's content with `payload`."""

    async def delete(self, message: MessageRef) -> None:
        """Remove a posted message."""


@runtime_checkable
class NativeStream(Protocol):
    """Optional: a platform-native streaming message. Any method may raise `StreamRefused`."""

    def wants_native_stream(self, thread: ThreadKey) -> bool:
        """Whether this thread should use the native stream (e.g. DMs only)."""

    async def start_stream(self, thread: ThreadKey) -> MessageRef: ...

    async def append_stream(self, message: MessageRef, text: str) -> None: ...

    async def stop_stream(self, message: MessageRef, payload: Any) -> None:
        """Close the stream, leaving `payload` (the rendered final part) as the message."""
