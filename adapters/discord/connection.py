"""discord.py pointed at the configured API: REST base URL, and the gateway that API hands out.

discord.py builds every REST URL from the class attribute `discord.http.Route.BASE`, and a
plain `Client` opens its websocket at the built-in `wss://gateway.discord.gg` without
asking the API. `use_api` (called once, at start-up, from settings) sets the base URL;
`GatewayFromApi` asks `GET /gateway/bot` of that API and connects there instead.
"""

from __future__ import annotations

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route

from adapters.discord.settings import DiscordSettings


def use_api(api_url: str) -> None:
    """The one place the process-wide `Route.BASE` is set (discord.py offers no per-client base)."""
    Route.BASE = api_url.rstrip("/")


class GatewayFromApi(HTTPClient):
    """discord.py's HTTP client whose websockets go to the gateway the configured API names."""

    _gateway: yarl.URL | None = None

    async def ws_connect(
        self, url: str, *, compress: int = 0
    ) -> aiohttp.ClientWebSocketResponse:
        target = yarl.URL(url)
        if target.host == DiscordWebSocket.DEFAULT_GATEWAY.host:
            if self._gateway is None:
                _, gateway_url, _ = await self.get_bot_gateway()
                self._gateway = yarl.URL(gateway_url)
            target = self._gateway.with_query(target.query)
        return await super().ws_connect(str(target), compress=compress)


def intents(settings: DiscordSettings) -> discord.Intents:
    """Only what the bridge reads: guilds (channels, threads), guild and DM messages.
    Message content is privileged and optional: mentions and DMs carry text without it."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = settings.discord_message_content
    return wanted


def make_client(
    settings: DiscordSettings, *, guild_ready_timeout: float = 2.0
) -> discord.Client:
    """A `Client`, or an `AutoShardedClient` when shards are configured, talking to the configured API."""
    use_api(settings.api_url)
    options: dict[str, object] = {
        "intents": intents(settings),
        "allowed_mentions": discord.AllowedMentions.none(),
        "application_id": settings.discord_application_id,
        "chunk_guilds_at_startup": False,
        "guild_ready_timeout": guild_ready_timeout,
    }
    client: discord.Client
    if settings.sharded:
        client = discord.AutoShardedClient(
            shard_count=settings.discord_shard_count,
            shard_ids=list(settings.shard_ids) or None,
            **options,
        )
    else:
        client = discord.Client(**options)
    http = GatewayFromApi(client.loop)
    client.http = http
    client._connection.http = (
        http  # the state made its own reference during Client.__init__
    )
    return client
