"""Slack settings from the environment (and `.env`), validated once; secrets stay `SecretStr`.

`load_slack_settings` turns every problem into one `ConfigError` line that names the
variable and how to fix it, never echoing a token.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.config import ConfigError, build_settings


class NativeStreaming(StrEnum):
    """Where replies use Slack's native streaming (`chat.startStream`) instead of edits."""

    DM = "dm"
    """Direct messages with the bot, which includes assistant threads (the default)."""
    ALL = "all"
    """Also channel threads (Slack then needs the asking user as the stream's recipient)."""
    OFF = "off"


class SlackSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_admin_users: str = ""
    slack_command: str = "/agent"
    slack_native_streaming: NativeStreaming = NativeStreaming.DM
    slack_assistant_status: bool = True
    slack_rate_scale: float = Field(default=1.0, gt=0, le=100)
    """Multiplies every declared Slack rate. Only for tests against a fake Slack whose time
    window is shortened by the same factor; leave at 1 against the real Slack."""

    @field_validator("slack_bot_token", "slack_app_token", "slack_signing_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb- (OAuth & Permissions → Bot User OAuth Token)")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp- (Basic Information → App-Level Tokens, scope connections:write)")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @field_validator("slack_command")
    @classmethod
    def _command(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith("/") or len(value) < 2 or " " in value:
            raise ValueError("must be a slash command such as /agent")
        return value

    @property
    def bot_token(self) -> str:
        return self.slack_bot_token.get_secret_value() if self.slack_bot_token else ""

    @property
    def app_token(self) -> str:
        return self.slack_app_token.get_secret_value() if self.slack_app_token else ""

    @property
    def signing_secret(self) -> str:
        return self.slack_signing_secret.get_secret_value() if self.slack_signing_secret else ""

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)

    @property
    def admin_users(self) -> frozenset[str]:
        return frozenset(u.strip() for u in self.slack_admin_users.split(",") if u.strip())

    def secrets(self) -> list[str]:
        return [s for s in (self.bot_token, self.app_token, self.signing_secret) if s]


def load_slack_settings(**overrides: object) -> SlackSettings | None:
    """Slack's settings, or None when SLACK_BOT_TOKEN is unset (Slack is simply off)."""
    settings = build_settings(SlackSettings, **overrides)
    if settings.slack_bot_token is None:
        return None
    if not settings.app_token and not settings.signing_secret:
        raise ConfigError(
            "SLACK_SIGNING_SECRET: set it for HTTP mode (Basic Information → Signing Secret), "
            "or set SLACK_APP_TOKEN (xapp-…) for Socket Mode"
        )
    return settings
