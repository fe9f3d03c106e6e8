"""The Slack adapter: events in through slack-bolt, replies out through the Web API."""

from __future__ import annotations

from adapters.slack.platform import SlackPlatform
from adapters.slack.settings import load_slack_settings


def load_platform(**overrides: object) -> SlackPlatform | None:
    """Slack for `agent-bridge run`, or None when SLACK_BOT_TOKEN is unset.

    Raises `bridge.config.ConfigError` (one line naming the variable) when the token is set
    but the rest is incomplete or malformed.
    """
    settings = load_slack_settings(**overrides)
    return SlackPlatform(settings) if settings is not None else None


__all__ = ["SlackPlatform", "load_platform"]
