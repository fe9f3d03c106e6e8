"""Settings from the environment and a `.env` file, validated once at start-up.

A bad setting becomes one `ConfigError` line naming the variable, never a traceback and
never the value of a secret.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, TypeVar

from pydantic import Field, HttpUrl, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.limits import RateSpec

S = TypeVar("S", bound=BaseSettings)


class Dialect(StrEnum):
    SENTIENTONE = "sentientone"
    THINNEST = "thinnest"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable and how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    agent_api_url: HttpUrl = Field(default=HttpUrl("https://api.sentientone.ai"))
    agent_api_key: SecretStr | None = None
    agent_api_dialect: Dialect = Dialect.SENTIENTONE
    agent_default_id: str | None = None
    agent_idle_timeout: float = Field(default=60.0, gt=0)
    agent_connect_timeout: float = Field(default=10.0, gt=0)
    agent_max_retries: int = Field(default=3, ge=0, le=10)
    agent_retry_after_cap: float = Field(default=30.0, gt=0)

    bridge_database_url: str = "sqlite+aiosqlite:///./agent-bridge.db"
    bridge_log_level: str = "INFO"
    bridge_log_format: Literal["text", "json"] = "text"
    bridge_max_message_chars: int = Field(default=8000, ge=1)
    bridge_user_rate_limit: str = "20/60"
    bridge_channel_rate_limit: str = "120/60"
    bridge_shutdown_grace: float = Field(default=30.0, ge=0)
    bridge_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    """How long a replica's claim on an unfinished reply lasts without renewal (renewed every
    third of it); after that another replica finalizes the reply or answers the queued message."""
    bridge_http_host: str = "0.0.0.0"
    bridge_http_port: int = Field(default=3000, ge=0, le=65535)
    """The one HTTP port of `agent-bridge run`: /healthz, /readyz, /metrics and Slack's HTTP mode
    (0 picks a free port; the bound address is logged)."""

    @field_validator("bridge_user_rate_limit", "bridge_channel_rate_limit")
    @classmethod
    def _rate_spec(cls, value: str) -> str:
        RateSpec.parse(value)  # raises ValueError with the expected form
        return value

    @property
    def user_rate_limit(self) -> RateSpec | None:
        return RateSpec.parse(self.bridge_user_rate_limit)

    @property
    def channel_rate_limit(self) -> RateSpec | None:
        return RateSpec.parse(self.bridge_channel_rate_limit)

    @field_validator("agent_default_id", "agent_api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("bridge_database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if "://" not in value or scheme not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
            raise ValueError(
                "must be an async SQLAlchemy URL: sqlite+aiosqlite:///path.db or "
                "postgresql+asyncpg://user@host/db"
            )
        return value

    @property
    def api_key(self) -> str:
        return self.agent_api_key.get_secret_value() if self.agent_api_key else ""

    def require_api_key(self) -> None:
        """Commands that talk to the real agent API need a key; say so before anything starts."""
        if not self.api_key:
            raise ConfigError(
                "AGENT_API_KEY: not set; set it to your agent platform key "
                "(SentientOne: the X-Api-Key value; thinnest: the Bearer token)"
            )

    def secrets(self) -> list[str]:
        """Every secret value this process holds, for log and message redaction."""
        return [s for s in (self.api_key,) if s]


def build_settings(cls: type[S], **overrides: object) -> S:
    """Any settings class (the core's or an adapter's), or `ConfigError` with one part per bad
    variable — naming it and saying what is wrong, never echoing its value."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            name = str(err["loc"][0]).upper() if err["loc"] else cls.__name__
            lines.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("; ".join(lines)) from None


def load_settings(**overrides: object) -> Settings:
    """The core's settings, or `ConfigError` with one line per bad variable."""
    return build_settings(Settings, **overrides)
