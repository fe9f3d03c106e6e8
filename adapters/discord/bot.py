"""Discord events in, core calls out: `/ask`, mentions, bot-started threads, DMs, `/agent`, Stop.

Every reply runs in a task this class owns, so shutting down cancels them (the relay then
marks the replies interrupted) instead of leaving discord.py's tasks behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import discord

from adapters.discord.commands import build_tree
from adapters.discord.places import (
    Place,
    guild_id_of,
    place_of,
    thread_name,
    without_mentions_of,
)
from adapters.discord.rest import DiscordRest
from adapters.discord.settings import DiscordSettings
from adapters.discord.surface import DiscordSurface, InteractionHandle, parse_stop_id
from bridge.admin import AdminCommands, AdminRequest, binding_flag
from bridge.app import Bridge
from bridge.keys import ThreadKey
from bridge.relay import Inbound
from bridge.surface import SurfaceError

log = logging.getLogger("adapters.discord.bot")

DEFERRED_MESSAGE, DEFERRED_UPDATE, MESSAGE = 5, 6, 4
EPHEMERAL = 1 << 6
DM_BIND_HINT = (
    "agent-bridge bind --platform discord --workspace dm --channel {channel} AGENT_ID"
)


def _created_at(interaction: discord.Interaction) -> float:
    """When Discord created the interaction, on the event loop's clock: its 15 minutes run from
    then, not from when a (possibly backlogged) gateway delivered it. Clock skew can only make
    this earlier, which makes the switch to channel messages earlier, never late."""
    loop_now = asyncio.get_running_loop().time()
    age = time.time() - discord.utils.snowflake_time(interaction.id).timestamp()
    return loop_now - max(0.0, age)


class DiscordBridge:
    """Wires one discord.py client to the bridge's relay and admin commands."""

    def __init__(
        self,
        client: discord.Client,
        bridge: Bridge,
        settings: DiscordSettings,
        rest: DiscordRest,
    ) -> None:
        self.client = client
        self.bridge = bridge
        self.settings = settings
        self.rest = rest
        self.admin_commands = AdminCommands(
            bridge.store, bridge.agent.validate_agent_id, command="/agent"
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.tree = build_tree(client, self)
        client.event(self.on_message)
        client.event(self.on_interaction)

    # -- lifecycle ---------------------------------------------------------------------------

    def spawn(self, job: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(job, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def shutdown(self) -> None:
        """Cancel replies still streaming and wait until they are persisted as interrupted."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- commands ----------------------------------------------------------------------------

    async def ask(self, interaction: discord.Interaction, prompt: str) -> None:
        prompt = prompt if isinstance(prompt, str) else ""  # a stale command may send anything
        received = _created_at(interaction)
        try:  # first, within Discord's 3-second window
            await self.rest.respond(interaction.id, interaction.token, DEFERRED_MESSAGE)
        except SurfaceError as exc:
            log.warning("could not acknowledge /ask %s: %s", interaction.id, exc)
            return
        place = place_of(
            self._channel(interaction), interaction.guild_id, f"ask-{interaction.id}"
        )
        handle = InteractionHandle(
            str(interaction.id),
            interaction.token,
            str(interaction.application_id),
            received + self.settings.discord_interaction_deadline,
        )
        surface = self._surface(place, str(interaction.user.id), interaction=handle)
        inbound = Inbound(
            place.key, str(interaction.user.id), prompt, f"interaction:{interaction.id}"
        )
        self.spawn(
            self.bridge.relay.handle(inbound, surface), f"discord /ask {interaction.id}"
        )

    async def admin(self, interaction: discord.Interaction, text: str) -> None:
        """Ephemeral answers; permission re-checked here, whatever the client showed."""
        try:
            await self.rest.respond(
                interaction.id,
                interaction.token,
                DEFERRED_MESSAGE,
                {"flags": EPHEMERAL},
            )
        except SurfaceError as exc:
            log.warning("could not acknowledge /agent %s: %s", interaction.id, exc)
            return
        if interaction.guild_id is None:
            answer = "`/agent` works in a server channel; DMs use the default agent."
        else:
            place = place_of(self._channel(interaction), interaction.guild_id, "")
            permissions = interaction.permissions
            is_admin = permissions.manage_channels or permissions.administrator
            # `<@id>` shows as the member's name in /agent status, and never pings (no allowed mentions).
            request = AdminRequest(
                place.key, f"<@{interaction.user.id}>", is_admin, text
            )
            answer = (await self.admin_commands.run(request)).text
        try:
            await self.rest.webhook(
                "PATCH",
                interaction.application_id,
                interaction.token,
                "@original",
                {"content": answer[:2000], "allowed_mentions": {"parse": []}},
            )
        except SurfaceError as exc:
            log.warning("could not answer /agent %s: %s", interaction.id, exc)

    async def tell(self, interaction: discord.Interaction, text: str) -> None:
        try:
            await self.rest.respond(
                interaction.id, interaction.token, MESSAGE, {"content": text, "flags": EPHEMERAL}
            )
        except SurfaceError as exc:
            log.info("could not answer interaction %s: %s", interaction.id, exc)

    # -- buttons -----------------------------------------------------------------------------

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.component or not isinstance(
            interaction.data, dict
        ):
            return
        parsed = parse_stop_id(str(interaction.data.get("custom_id", "")))
        if parsed is None:
            return
        asker, key = parsed
        allowed = (
            str(interaction.user.id) == asker or interaction.permissions.manage_messages
        )
        try:
            if not allowed:
                await self.rest.respond(
                    interaction.id,
                    interaction.token,
                    MESSAGE,
                    {
                        "content": "Only the person who asked (or someone who can manage messages) can stop this answer.",
                        "flags": EPHEMERAL,
                    },
                )
                return
            await self.rest.respond(interaction.id, interaction.token, DEFERRED_UPDATE)
        except SurfaceError as exc:
            log.warning("could not acknowledge Stop: %s", exc)
        if allowed and not await self.bridge.relay.stop_thread(key):
            log.info("Stop pressed in %s, but nothing was streaming", key)

    # -- messages ----------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if me is None or message.author.id == me.id:
            return  # never itself
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        guild_id = guild_id_of(message.channel, message.guild)
        mentioned = any(user.id == me.id for user in message.mentions)
        follow_up = guild_id is not None and not mentioned
        if follow_up:
            # Without the privileged message-content intent Discord blanks the text of guild
            # messages that don't mention the bot, so follow-ups in its threads need a mention.
            # Decided before any database work: most guild messages are not for the bot.
            in_bot_thread = (
                isinstance(message.channel, discord.Thread)
                and message.channel.owner_id == me.id
            )
            if not (self.settings.discord_message_content and in_bot_thread):
                return
        place = place_of(message.channel, guild_id, str(message.id))
        binding = None
        if guild_id is not None:
            binding = await self.bridge.store.get_binding(
                place.key.platform, place.key.workspace, place.key.channel
            )
        options = binding.options if binding is not None else None
        if message.author.bot and not binding_flag(options, "allow_bots"):
            return
        if follow_up and binding_flag(options, "require_mention"):
            return
        text = without_mentions_of(message.content, me.id)
        reply_to: str | None = str(message.id) if mentioned else None
        if (
            guild_id is not None
            and not place.in_thread
            and binding_flag(options, "new_thread")
        ):
            place, reply_to = await self._into_new_thread(message, place, text)
        surface = self._surface(place, str(message.author.id), reply_to=reply_to)
        inbound = Inbound(
            place.key,
            str(message.author.id),
            text,
            f"message:{message.id}",
            from_bot=message.author.bot,
        )
        self.spawn(
            self.bridge.relay.handle(inbound, surface), f"discord message {message.id}"
        )

    async def _into_new_thread(
        self, message: discord.Message, place: Place, text: str
    ) -> tuple[Place, str | None]:
        """Start a thread from the question; on refusal, answer in the channel instead."""
        name = thread_name(text, f"Question from {message.author.display_name}")
        try:
            thread = await self.rest.start_thread(
                place.post_channel, str(message.id), name
            )
        except SurfaceError as exc:
            log.warning(
                "could not start a thread in %s (%s); answering in the channel",
                place.key,
                exc,
            )
            return place, str(message.id)
        thread_id = str(thread["id"])
        key = ThreadKey(
            place.key.platform, place.key.workspace, place.key.channel, thread_id
        )
        return Place(key, thread_id, True), None

    @staticmethod
    def _channel(interaction: discord.Interaction) -> object:
        """The interaction's channel object, or just its id when discord.py could not build one."""
        return interaction.channel or discord.Object(id=interaction.channel_id or 0)

    def _surface(
        self,
        place: Place,
        asker: str,
        *,
        interaction: InteractionHandle | None = None,
        reply_to: str | None = None,
    ) -> DiscordSurface:
        hint = DM_BIND_HINT if place.key.workspace == "dm" else "/agent bind <agent-id>"
        return DiscordSurface(
            self.rest,
            place.post_channel,
            thread=place.key,
            asker=asker,
            interaction=interaction,
            reply_to=reply_to,
            bind_hint=hint,
        )
