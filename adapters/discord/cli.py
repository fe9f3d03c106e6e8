"""`agent-bridge discord …`: register the slash commands, print the invite URL."""

from __future__ import annotations

import asyncio

import discord
import typer

from adapters.discord.commands import build_tree
from adapters.discord.connection import make_client
from adapters.discord.rest import DiscordRest
from adapters.discord.settings import DiscordSettings, load_discord_settings
from bridge.config import ConfigError
from bridge.surface import SurfaceError

app = typer.Typer(
    help="Discord: register the slash commands, print the invite URL.",
    no_args_is_help=True,
)

BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    embed_links=True,
    read_message_history=True,
)
"""Exactly what the bridge uses: read and answer, start threads for answers, show embeds,
reply to the question (a message reference needs Read Message History)."""
SCOPES = ("bot", "applications.commands")


class _RegistrationOnly:
    """The handler while only registering: no gateway is connected, so no command can arrive;
    should one be routed here anyway, it is answered, not dropped."""

    def __init__(self, rest: DiscordRest) -> None:
        self.rest = rest

    async def ask(self, interaction: discord.Interaction, prompt: str) -> None:
        await self._decline(interaction)

    async def admin(self, interaction: discord.Interaction, text: str) -> None:
        await self._decline(interaction)

    async def tell(self, interaction: discord.Interaction, text: str) -> None:
        await self._decline(interaction)

    async def _decline(self, interaction: discord.Interaction) -> None:
        await self.rest.respond(
            interaction.id,
            interaction.token,
            4,
            {"content": "The bridge is not serving right now.", "flags": 64},
        )


def _settings() -> DiscordSettings:
    try:
        settings = load_discord_settings()
    except ConfigError as exc:
        typer.echo(f"Configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not settings.token:
        typer.echo(
            "DISCORD_BOT_TOKEN is not set: copy the token from the Developer Portal's Bot page.",
            err=True,
        )
        raise typer.Exit(2)
    return settings


async def sync(settings: DiscordSettings, guild_id: int | None) -> list[str]:
    """Register the commands globally (up to an hour to appear) or in one guild (at once)."""
    client = make_client(settings)
    async with DiscordRest(settings.api_url, settings.token) as rest:
        tree = build_tree(client, _RegistrationOnly(rest))
        try:
            await client.login(settings.token)
            guild = discord.Object(id=guild_id) if guild_id else None
            if guild is not None:
                tree.copy_global_to(guild=guild)
            synced = await tree.sync(guild=guild)
        finally:
            await client.close()
    return [command.name for command in synced]


async def invite_url(settings: DiscordSettings) -> str:
    application_id = settings.discord_application_id
    if application_id is None:
        async with DiscordRest(settings.api_url, settings.token) as rest:
            application_id = await rest.application_id()
    return discord.utils.oauth_url(
        application_id, permissions=BOT_PERMISSIONS, scopes=SCOPES
    )


@app.command("sync-commands")
def sync_commands(
    guild: int = typer.Option(
        None,
        "--guild",
        help="Register in this guild only (appears at once; good for testing).",
    ),
) -> None:
    """Register /ask and /agent with Discord."""
    settings = _settings()
    try:
        names = asyncio.run(sync(settings, guild))
    except discord.LoginFailure:
        typer.echo(
            "DISCORD_BOT_TOKEN was refused by Discord: reset it on the Bot page and update it.",
            err=True,
        )
        raise typer.Exit(1) from None
    except (discord.HTTPException, OSError) as exc:
        typer.echo(f"Could not register the commands: {exc}", err=True)
        raise typer.Exit(1) from None
    where = (
        f"guild {guild}"
        if guild
        else "all guilds (global commands can take up to an hour to appear)"
    )
    typer.echo(f"Registered {', '.join('/' + n for n in names)} for {where}.")


@app.command("invite-url")
def print_invite_url() -> None:
    """Print the URL that adds the bot to a server with exactly the permissions it uses."""
    settings = _settings()
    try:
        typer.echo(asyncio.run(invite_url(settings)))
    except SurfaceError as exc:
        typer.echo(
            f"Could not read the application id ({exc}); set DISCORD_APPLICATION_ID.",
            err=True,
        )
        raise typer.Exit(1) from None
