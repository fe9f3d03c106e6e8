"""The shape of what Slack sends, checked at the door.

Slack's own payloads always have strings where strings belong. Anything else (a forged or
broken request) is refused with 400 before bolt or our listeners see it, because both index
and hash these fields freely.
"""

from __future__ import annotations

from typing import Any

_ENVELOPE_STRINGS = ("type", "team_id", "event_id", "api_app_id", "challenge", "token", "enterprise_id")
_EVENT_STRINGS = (
    "type", "subtype", "user", "bot_id", "text", "ts", "thread_ts", "channel", "channel_type", "team", "event_ts",
)
_ACTION_STRINGS = ("action_id", "block_id", "value", "type")
_COMMAND_REQUIRED = ("command", "user_id", "channel_id", "team_id", "response_url")
_INTERACTION_OBJECTS = ("container", "channel", "message", "user", "team")


def _strings(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            return f"{where}.{key} must be a string"
    return None


def problem(body: Any) -> str | None:
    """Why `body` (already parsed) cannot be a Slack request, or None when its shape is fine."""
    if not isinstance(body, dict):
        return "the body must be an object"
    if "command" in body:  # a slash command: form fields are strings by construction
        for key in _COMMAND_REQUIRED:
            if not body.get(key):
                return f"a slash command needs {key}"
        if not str(body["response_url"]).startswith(("https://", "http://")):
            return "response_url must be a URL"
        return None
    found = _strings(body, _ENVELOPE_STRINGS, "body")
    if found:
        return found
    event = body.get("event")
    if event is not None:
        if not isinstance(event, dict):
            return "body.event must be an object"
        found = _strings(event, _EVENT_STRINGS, "event")
        if found:
            return found
        if event.get("message") is not None and not isinstance(event["message"], dict):
            return "event.message must be an object"
    for key in _INTERACTION_OBJECTS:
        if body.get(key) is not None and not isinstance(body[key], dict):
            return f"body.{key} must be an object"
    actions = body.get("actions")
    if body.get("type") == "block_actions" and not actions:
        return "block_actions needs at least one action"
    if actions is not None:
        if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
            return "body.actions must be a list of objects"
        for action in actions:
            if not isinstance(action.get("action_id"), str):
                return "every action needs an action_id"
            found = _strings(action, _ACTION_STRINGS, "action")
            if found:
                return found
    return None
