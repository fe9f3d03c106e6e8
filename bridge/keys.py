"""Identity of a chat thread and of a posted message, shared by every platform."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """One conversation place: Slack `(team, channel, thread_ts)`, Discord `(guild|"dm", channel, root)`."""

    platform: str
    workspace: str
    channel: str
    thread: str = ""

    def __str__(self) -> str:
        return f"{self.platform}:{self.workspace}/{self.channel}/{self.thread or '-'}"


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message the bot posted; `id` is the platform's own (Slack ts, Discord snowflake)."""

    thread: ThreadKey
    id: str
    channel: str | None = None
    """Where the message lives when that is not the thread key's channel (e.g. a Discord thread)."""

    def stored(self) -> str:
        """The form kept in the database: the id, prefixed by its channel when that differs."""
        if self.channel and self.channel != self.thread.channel:
            return f"{self.channel}/{self.id}"
        return self.id

    @classmethod
    def from_stored(cls, thread: ThreadKey, stored: str) -> MessageRef:
        channel, _, message_id = stored.rpartition("/")
        return cls(thread, message_id, channel or thread.channel)
