"""Discord adapter: `/ask`, mentions, threads and DMs streamed by message edits; `/agent` admin
commands; Stop button; sharding. `load_platform()` is what `agent-bridge run` calls."""

from __future__ import annotations

from adapters.discord.platform import DiscordPlatform
from adapters.discord.settings import load_discord_settings


def load_platform() -> DiscordPlatform | None:
    """None when DISCORD_BOT_TOKEN is unset; `ConfigError` (one line) when a setting is malformed."""
    settings = load_discord_settings()
    if not settings.token:
        return None
    return DiscordPlatform(settings)


__all__ = ["DiscordPlatform", "load_platform"]
