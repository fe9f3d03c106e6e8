"""Where one reply appears on Discord: an interaction's response (then channel messages), or a
channel / thread / DM. One surface per inbound message; budgets live in the core, shared.

Interaction replies: the deferred "thinking" message is the placeholder, the first text
edits `@original`, further parts are webhook follow-ups. Interaction tokens die after 15
minutes, so past the configured deadline (840 s by default) edits raise `MessageExpired`
and the core continues the reply in ordinary channel messages.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from adapters.discord.render import STOP_PREFIX, DiscordMessage, render_part
from adapters.discord.rest import DiscordRest
from bridge.keys import MessageRef, ThreadKey
from bridge.reply import MessagePart
from bridge.surface import MessageExpired, Rate, Scope, SurfaceError, SurfaceLimits

log = logging.getLogger("adapters.discord.surface")

LIMITS = SurfaceLimits(
    max_text=2000,
    # Discord allows about 5 message creates and 5 edits per 5 s per channel. A bucket of
    # burst 1 refilling 0.9/s never exceeds 5 calls in any 5-second window (1 + 0.9 * 5 < 6),
    # with half a second of slack for requests that arrive bunched up.
    post=Rate(per_second=0.9, burst=1, scope=Scope.CHANNEL),
    edit=Rate(per_second=0.9, burst=1, scope=Scope.CHANNEL),
)
CONTINUED_NOTE = "\n-# continued in the next message ↓"
MOVED_NOTE = "-# The answer is in the next message ↓"


@dataclass(frozen=True, slots=True)
class InteractionHandle:
    """A deferred interaction this reply answers: usable for follow-ups until `deadline`."""

    id: str
    token: str
    application_id: str
    deadline: float
    """Event-loop time after which the token is no longer used."""


def stop_custom_id(thread: ThreadKey, asker: str) -> str:
    """`ab:stop:<asker>:<workspace>:<channel>:<thread>` — everything Stop needs, under 100 chars."""
    return f"{STOP_PREFIX}{asker}:{thread.workspace}:{thread.channel}:{thread.thread}"


def parse_stop_id(custom_id: str) -> tuple[str, ThreadKey] | None:
    if not custom_id.startswith(STOP_PREFIX):
        return None
    pieces = custom_id[len(STOP_PREFIX) :].split(":")
    if len(pieces) != 4:
        return None
    asker, workspace, channel, thread = pieces
    return asker, ThreadKey("discord", workspace, channel, thread)


class DiscordSurface:
    """A `bridge.surface.Surface` for one reply in one Discord place."""

    platform = "discord"
    limits = LIMITS

    def __init__(
        self,
        rest: DiscordRest,
        channel_id: str,
        *,
        thread: ThreadKey,
        asker: str,
        interaction: InteractionHandle | None = None,
        reply_to: str | None = None,
        bind_hint: str = "/agent bind <agent-id>",
    ) -> None:
        self.rest = rest
        self.channel_id = channel_id
        self.interaction = interaction
        self.reply_to = reply_to
        self.bind_hint = bind_hint
        self._stop_id = stop_custom_id(thread, asker)
        self._original_taken = False
        self._webhook_messages: set[str] = set()
        self._last: dict[str, DiscordMessage] = {}
        self._loop = asyncio.get_running_loop()

    # -- Surface --------------------------------------------------------------------------

    def render(self, part: MessagePart) -> DiscordMessage:
        return render_part(part, self._stop_id)

    async def post(self, thread: ThreadKey, payload: DiscordMessage) -> MessageRef:
        if self.interaction is not None and not self._interaction_usable():
            await self._retire_interaction()
        if self._interaction_usable():
            try:
                data = await self._post_via_interaction(payload)
            except MessageExpired:
                log.info(
                    "interaction token ran out in %s; posting to the channel", thread
                )
                self.interaction = None
            else:
                self._webhook_messages.add(str(data["id"]))
                return self._remember(thread, data, payload)
        body = payload.json()
        if self.reply_to is not None:
            body["message_reference"] = {
                "message_id": self.reply_to,
                "fail_if_not_exists": False,
            }
            self.reply_to = (
                None  # only the first message of a reply answers the question
            )
        data = await self.rest.create_message(self.channel_id, body)
        return self._remember(thread, data, payload)

    async def edit(self, message: MessageRef, payload: DiscordMessage) -> None:
        if message.id in self._webhook_messages:
            interaction = self.interaction
            if interaction is None or not self._interaction_usable():
                await self._leave(message)
                raise MessageExpired(
                    "the interaction's 15-minute token is about to expire"
                )
            await self.rest.webhook(
                "PATCH",
                interaction.application_id,
                interaction.token,
                message.id,
                payload.json(),
            )
        else:
            await self.rest.edit_message(
                message.channel or self.channel_id, message.id, payload.json()
            )
        self._last[message.id] = payload

    async def delete(self, message: MessageRef) -> None:
        if (
            message.id in self._webhook_messages
            and self.interaction is not None
            and self._interaction_usable()
        ):
            await self.rest.webhook(
                "DELETE",
                self.interaction.application_id,
                self.interaction.token,
                message.id,
            )
        else:
            await self.rest.delete_message(
                message.channel or self.channel_id, message.id
            )
        self._last.pop(message.id, None)

    # -- helpers ----------------------------------------------------------------------------

    def _interaction_usable(self) -> bool:
        return (
            self.interaction is not None
            and self._loop.time() < self.interaction.deadline
        )

    async def _post_via_interaction(self, payload: DiscordMessage) -> Any:
        interaction = self.interaction
        assert interaction is not None
        if not self._original_taken:
            if payload.placeholder:  # the deferred "thinking" message already shows it
                data = await self.rest.webhook(
                    "GET", interaction.application_id, interaction.token, "@original"
                )
            else:
                data = await self.rest.webhook(
                    "PATCH",
                    interaction.application_id,
                    interaction.token,
                    "@original",
                    payload.json(),
                )
            self._original_taken = (
                True  # only now: a retried first post must still use @original
            )
            return data
        return await self.rest.follow_up(
            interaction.application_id, interaction.token, payload.json()
        )

    def _remember(
        self, thread: ThreadKey, data: Any, payload: DiscordMessage
    ) -> MessageRef:
        message_id = str(data["id"])
        self._last[message_id] = payload
        return MessageRef(
            thread, message_id, str(data.get("channel_id") or self.channel_id)
        )

    async def _retire_interaction(self) -> None:
        """The deadline passed before the reply used its interaction (it waited its turn in a
        busy thread): best effort, point the "thinking…" message at the channel message."""
        interaction, self.interaction = self.interaction, None
        if interaction is None or self._original_taken:
            return
        body = {
            "content": MOVED_NOTE,
            "embeds": [],
            "components": [],
            "allowed_mentions": {"parse": []},
        }
        try:
            await self.rest.webhook(
                "PATCH",
                interaction.application_id,
                interaction.token,
                "@original",
                body,
            )
        except SurfaceError as exc:
            log.info("could not point the expiring interaction at the channel: %s", exc)

    async def _leave(self, message: MessageRef) -> None:
        """Best effort, while the token still works: drop the old message's Stop button and say
        where the reply continues. Its text stays, so nothing is lost if this fails."""
        interaction, last = self.interaction, self._last.get(message.id)
        self.interaction = None
        self._webhook_messages.discard(message.id)
        if interaction is None or last is None:
            return
        content = (
            last.content + CONTINUED_NOTE
            if len(last.content) + len(CONTINUED_NOTE) <= 2000
            else last.content
        )
        body = DiscordMessage(content, last.embeds).json()
        try:
            await self.rest.webhook(
                "PATCH", interaction.application_id, interaction.token, message.id, body
            )
        except SurfaceError as exc:
            log.info("could not mark the expiring interaction message: %s", exc)
