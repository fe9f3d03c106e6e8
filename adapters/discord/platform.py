"""`agent-bridge run` for Discord: log in, hold the gateway, serve until asked to stop."""

from __future__ import annotations

import asyncio
import logging

import discord

from adapters.discord.bot import DiscordBridge
from adapters.discord.connection import make_client
from adapters.discord.rest import DiscordRest
from adapters.discord.settings import DiscordSettings
from adapters.discord.surface import DiscordSurface
from bridge.app import Bridge
from bridge.config import ConfigError
from bridge.keys import ThreadKey

log = logging.getLogger("adapters.discord")


class DiscordPlatform:
    """The `bridge.platforms.Platform` for Discord."""

    name = "discord"

    def __init__(
        self, settings: DiscordSettings, *, guild_ready_timeout: float = 2.0
    ) -> None:
        self.settings = settings
        self.guild_ready_timeout = guild_ready_timeout
        """How long discord.py waits for further GUILD_CREATEs before it calls itself ready."""
        self.connected = asyncio.Event()
        """Set once the gateway session is ready (tests and health checks wait on it)."""
        self.bot: DiscordBridge | None = None
        self._client: discord.Client | None = None
        self._gateway_up = False
        """False between a gateway disconnect and the session's resume (for /readyz)."""

    def secrets(self) -> list[str]:
        return self.settings.secrets()

    async def readiness(self) -> str | None:
        """For /readyz (`bridge.ops_http.Readiness`): the gateway session is ready and up."""
        client = self._client
        if not self.connected.is_set() or client is None or client.is_closed():
            return "gateway not ready"
        if not self._gateway_up:
            return "gateway disconnected (reconnecting)"
        return None

    @staticmethod
    async def _serve_until(bridge: Bridge, rest: DiscordRest, stop: asyncio.Event) -> None:
        """Until `stop`: take over Discord replies whose replica (or an earlier process) died.
        Streaming ones are shown as interrupted (edits go to the channel each message was
        stored with; one that never showed a message gets one in its channel); queued ones
        are answered here."""

        def surface_for(key: ThreadKey) -> DiscordSurface:
            return DiscordSurface(rest, key.channel, thread=key, asker="")

        await bridge.relay.keep_recovering(DiscordSurface.platform, surface_for, stop)

    async def run(self, bridge: Bridge, stop: asyncio.Event) -> None:
        client = make_client(
            self.settings, guild_ready_timeout=self.guild_ready_timeout
        )
        async with DiscordRest(self.settings.api_url, self.settings.token) as rest:
            self.bot = bot = DiscordBridge(client, bridge, self.settings, rest)
            recovering: list[asyncio.Task[None]] = []

            async def on_ready() -> None:
                log.info(
                    "connected to Discord as %s (%s)",
                    client.user,
                    client.user.id if client.user else "?",
                )
                if not recovering:  # the first ready of this run; later ones are reconnects
                    recovering.append(
                        asyncio.create_task(self._serve_until(bridge, rest, stop), name="discord recovery")
                    )
                self._gateway_up = True
                self.connected.set()

            async def on_disconnect() -> None:
                self._gateway_up = False

            async def on_resumed() -> None:
                self._gateway_up = True

            client.event(on_ready)
            client.event(on_disconnect)
            client.event(on_resumed)
            self._client = client
            try:
                await client.login(self.settings.token)
            except discord.LoginFailure:
                await client.close()
                raise ConfigError(
                    "DISCORD_BOT_TOKEN: Discord refused this token; reset it on the Bot page and update the variable"
                ) from None
            except BaseException:
                await client.close()
                raise
            gateway = asyncio.create_task(
                client.connect(reconnect=True), name="discord gateway"
            )
            stopping = asyncio.create_task(stop.wait(), name="discord stop")
            try:
                await asyncio.wait(
                    {gateway, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
                for task in recovering:
                    task.cancel()
                await asyncio.gather(*recovering, return_exceptions=True)
                await bot.shutdown()
                await client.close()
                if not gateway.done():
                    gateway.cancel()
                await asyncio.wait(
                    {gateway}
                )  # its outcome is read below, not raised here
                self.connected.clear()
                self._gateway_up = False
                self._client = None
            error = None if gateway.cancelled() else gateway.exception()
            if isinstance(error, discord.PrivilegedIntentsRequired):
                raise ConfigError(
                    "DISCORD_MESSAGE_CONTENT is on, but the Message Content intent is not enabled for this bot: "
                    "turn it on in the Developer Portal (Bot → Privileged Gateway Intents) or unset the variable"
                ) from None
            if error is not None:
                raise error
