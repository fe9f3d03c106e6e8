"""Discord settings from the environment (and `.env`), validated once at start-up.

A bad value becomes one `ConfigError` line naming the variable, never the token itself.
"""

from __future__ import annotations

from pydantic import (
    Field,
    HttpUrl,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.config import build_settings

MAX_INTERACTION_DEADLINE = 890.0
"""Interaction tokens live 900 s; the switch to channel messages must come before that."""


class DiscordSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    discord_bot_token: SecretStr | None = None
    discord_api_url: HttpUrl = Field(default=HttpUrl("https://discord.com/api/v10"))
    discord_application_id: int | None = Field(default=None, gt=0)
    discord_shard_count: int | None = Field(default=None, ge=1)
    discord_shard_ids: str | None = None
    """Comma-separated shard ids this process runs (needs DISCORD_SHARD_COUNT)."""
    discord_message_content: bool = False
    """Ask for the privileged message-content intent (only needed for `require_mention=no` threads
    to see follow-ups' text; mentions and DMs carry their content without it)."""
    discord_interaction_deadline: float = Field(
        default=840.0, gt=0, le=MAX_INTERACTION_DEADLINE
    )
    """Seconds after an interaction when its reply moves to ordinary channel messages."""

    @field_validator(
        "discord_bot_token",
        "discord_shard_ids",
        "discord_application_id",
        "discord_shard_count",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("discord_bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if token.lower().startswith("bot "):
            raise ValueError(
                "remove the leading 'Bot ' — paste only the token from the Bot page"
            )
        if (
            token.count(".") != 2
            or any(not piece for piece in token.split("."))
            or any(c.isspace() for c in token)
        ):
            raise ValueError(
                "does not look like a bot token (three dot-separated parts); "
                "copy it from the Developer Portal's Bot page (Reset Token)"
            )
        return SecretStr(token)

    @field_validator("discord_shard_ids")
    @classmethod
    def _shard_list(cls, value: str | None) -> str | None:
        if value is None:
            return None
        pieces = [p.strip() for p in value.split(",")]
        if not all(p.isdigit() for p in pieces):
            raise ValueError(
                "must be a comma-separated list of shard numbers, e.g. 0,1,2"
            )
        return ",".join(pieces)

    @model_validator(mode="after")
    def _shards_fit(self) -> DiscordSettings:
        ids = self.shard_ids
        if ids and self.discord_shard_count is None:
            raise ValueError(
                "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the total number of shards)"
            )
        if (
            ids
            and self.discord_shard_count is not None
            and max(ids) >= self.discord_shard_count
        ):
            raise ValueError(
                f"DISCORD_SHARD_IDS must be below DISCORD_SHARD_COUNT ({self.discord_shard_count}); got {max(ids)}"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("DISCORD_SHARD_IDS lists a shard twice")
        return self

    @property
    def token(self) -> str:
        return (
            self.discord_bot_token.get_secret_value() if self.discord_bot_token else ""
        )

    @property
    def api_url(self) -> str:
        return str(self.discord_api_url).rstrip("/")

    @property
    def shard_ids(self) -> tuple[int, ...]:
        return (
            tuple(int(p) for p in self.discord_shard_ids.split(","))
            if self.discord_shard_ids
            else ()
        )

    @property
    def sharded(self) -> bool:
        """Run an `AutoShardedClient` (explicit shard count or ids were configured)."""
        return self.discord_shard_count is not None

    def secrets(self) -> list[str]:
        return [self.token] if self.token else []


def load_discord_settings(**overrides: object) -> DiscordSettings:
    """Build the settings or raise `ConfigError` with one line naming each bad variable."""
    return build_settings(DiscordSettings, **overrides)
