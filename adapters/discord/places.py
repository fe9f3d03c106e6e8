"""Where a Discord event belongs in the core's terms: its thread key and the channel to post in.

Keys are `("discord", guild id or "dm", channel, conversation)`, with `channel` always the
channel a binding is made on — a thread's parent, so threads follow their channel's binding
and share its rate budget — and `conversation`:

- in a Discord thread: the thread's id (one conversation per thread);
- a mention in a channel: the mention's message id — a thread started from that message gets
  the same id, so a reply moved into a new thread keeps its conversation;
- `/ask` in a channel: `ask-<interaction id>` (each `/ask` is its own conversation, so many
  can stream at once);
- a DM: "" (one conversation per DM channel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import discord

from bridge.keys import ThreadKey

PLATFORM = "discord"
MAX_THREAD_NAME = 100


@dataclass(frozen=True, slots=True)
class Place:
    key: ThreadKey
    post_channel: str
    """The Discord channel (or thread) the reply is posted in."""
    in_thread: bool


def guild_id_of(channel: object, guild: discord.Guild | None) -> int | None:
    if guild is not None:
        return guild.id
    return getattr(channel, "guild_id", None)


def place_of(channel: object, guild_id: int | None, conversation: str) -> Place:
    """The place of an event in `channel`; `conversation` is used outside threads and DMs."""
    channel_id = str(channel.id)
    if guild_id is None:
        return Place(ThreadKey(PLATFORM, "dm", channel_id, ""), channel_id, False)
    if isinstance(channel, discord.Thread):
        parent = str(channel.parent_id)
        return Place(
            ThreadKey(PLATFORM, str(guild_id), parent, channel_id), channel_id, True
        )
    return Place(
        ThreadKey(PLATFORM, str(guild_id), channel_id, conversation), channel_id, False
    )


def without_mentions_of(text: str, user_id: int) -> str:
    """The question with the bot's own mention removed."""
    return re.sub(rf"<@!?{user_id}>", " ", text).strip()


def thread_name(question: str, fallback: str) -> str:
    """A thread title from the question's first line (Discord allows 1-100 characters)."""
    first = next((line for line in question.splitlines() if line.strip()), "")
    name = " ".join(re.sub(r"<[@#][!&]?\d+>", "", first).split())
    if not name:
        return fallback[:MAX_THREAD_NAME]
    return name if len(name) <= MAX_THREAD_NAME else name[: MAX_THREAD_NAME - 1] + "…"
