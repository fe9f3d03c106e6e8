"""The slash commands: `/ask prompt:` and the guild-only `/agent bind|unbind|status|reset`.

Defined once and used both to serve (`DiscordBridge`) and to register (`sync-commands`).
`/agent` is hidden from members without Manage Channels by `default_member_permissions`;
the handler checks the permission again, since server admins can change who sees it.
"""

from __future__ import annotations

import logging
import shlex
from typing import Protocol

import discord
from discord import app_commands

log = logging.getLogger("adapters.discord.commands")

MANAGE_CHANNELS = discord.Permissions(manage_channels=True)


class CommandHandler(Protocol):
    async def ask(self, interaction: discord.Interaction, prompt: str) -> None: ...

    async def admin(self, interaction: discord.Interaction, text: str) -> None:
        """`text` is the core's admin command line, e.g. `bind <agent-id> new_thread=yes`."""

    async def tell(self, interaction: discord.Interaction, text: str) -> None:
        """Answer the interaction with a private message (a command that could not run)."""


def build_tree(
    client: discord.Client, handler: CommandHandler
) -> app_commands.CommandTree:
    tree: app_commands.CommandTree = app_commands.CommandTree(client)

    @app_commands.command(
        name="ask", description="Ask the agent; the answer streams in here."
    )
    @app_commands.describe(prompt="What you want to ask")
    async def ask(interaction: discord.Interaction, prompt: str) -> None:
        await handler.ask(interaction, prompt)

    agent = app_commands.Group(
        name="agent",
        description="Bind this channel to an agent (needs Manage Channels)",
        guild_only=True,  # the older `dm_permission: false`
        allowed_contexts=app_commands.AppCommandContext(
            guild=True, dm_channel=False, private_channel=False
        ),
        default_permissions=MANAGE_CHANNELS,
    )

    @agent.command(name="bind", description="Answer this channel with an agent")
    @app_commands.describe(
        agent_id="The agent's id",
        new_thread="Answer each mention in a new thread named after the question",
        allow_bots="Also answer messages written by other bots",
        require_mention="In the bot's threads, answer only when mentioned again",
    )
    async def bind(
        interaction: discord.Interaction,
        agent_id: str,
        new_thread: bool | None = None,
        allow_bots: bool | None = None,
        require_mention: bool | None = None,
    ) -> None:
        words = ["bind", shlex.quote(agent_id)]
        for name, value in (
            ("new_thread", new_thread),
            ("allow_bots", allow_bots),
            ("require_mention", require_mention),
        ):
            if value is not None:
                words.append(f"{name}={'yes' if value else 'no'}")
        await handler.admin(interaction, " ".join(words))

    @agent.command(name="unbind", description="Stop answering in this channel")
    async def unbind(interaction: discord.Interaction) -> None:
        await handler.admin(interaction, "unbind")

    @agent.command(
        name="status", description="Binding, conversation, recent usage and errors"
    )
    async def status(interaction: discord.Interaction) -> None:
        await handler.admin(interaction, "status")

    @agent.command(name="reset", description="Start a new conversation in this thread")
    async def reset(interaction: discord.Interaction) -> None:
        await handler.admin(interaction, "reset")

    tree.add_command(ask)
    tree.add_command(agent)

    async def answer_command_error(
        interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """discord.py's default only logs, and the user sees "The application did not respond":
        say what happened, privately; log the expected cases without a traceback."""
        stale = isinstance(
            error,
            (app_commands.CommandNotFound, app_commands.CommandSignatureMismatch, app_commands.TransformerError),
        )
        if stale:
            log.warning("Discord sent a command this bot does not know (%s): sync the commands", type(error).__name__)
        else:
            log.error("Discord command failed", exc_info=error)
        await handler.tell(interaction, STALE_COMMANDS if stale else BROKEN_COMMAND)

    tree.on_error = answer_command_error  # type: ignore[method-assign]
    return tree


STALE_COMMANDS = (
    "This command doesn't match what this bot knows (its commands changed). "
    "An admin can run `agent-bridge discord sync-commands` to update them."
)
BROKEN_COMMAND = "Something went wrong with that command; it has been logged for the admin."
