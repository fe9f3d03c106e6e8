"""Slack as a `Surface` (post / update / delete) with the optional native stream.

Every Web API failure is translated into the core's vocabulary: 429 → `RateLimited` (the
client has no rate-limit retry handler, so the core's shared budgets see every 429), a
vanished message or channel → `MessageGone`, an uneditable message → `MessageExpired`, a
stream Slack no longer accepts → `StreamRefused`, anything else → `SurfaceError`.
Exception texts carry only the method and Slack's error code, never a token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import SlackMessage, render_part
from adapters.slack.settings import NativeStreaming
from bridge.keys import MessageRef, ThreadKey
from bridge.reply import MessagePart
from bridge.surface import (
    AccessDenied,
    MessageExpired,
    MessageGone,
    Rate,
    RateLimited,
    Scope,
    StreamRefused,
    SurfaceError,
    SurfaceLimits,
)

log = logging.getLogger("adapters.slack.surface")

MAX_TEXT = 3000
"""Markdown characters per message: leaves room under `chat.update`'s 4,000 for mrkdwn escapes."""

_MAX_ASKERS = 1000

_GONE = frozenset(
    {
        "message_not_found",
        "channel_not_found",
        "thread_not_found",
        "is_archived",
        "not_in_channel",
        "thread_locked",
        "restricted_action_thread_locked",
        "restricted_action",
        "cannot_reply_to_message",
    }
)
_EXPIRED = frozenset({"cant_update_message", "edit_window_closed"})
_DENIED = {
    "invalid_auth": "SLACK_BOT_TOKEN was refused; set a valid bot token and restart",
    "not_authed": "no SLACK_BOT_TOKEN was sent; set one and restart",
    "token_revoked": "SLACK_BOT_TOKEN was revoked; reinstall the app and set the new token",
    "token_expired": "SLACK_BOT_TOKEN has expired; set a fresh token and restart",
    "account_inactive": "the app's bot user was deactivated; reinstall the app",
    "missing_scope": "the app lacks a scope it needs; reinstall it from deploy/slack/manifest.yml",
    "no_permission": "the app may not do this in this workspace; check the app's settings",
}
"""Errors an admin must fix, each with what to do."""
_STREAM_REFUSED = frozenset(
    {
        "message_not_in_streaming_state",
        "streaming_state_conflict",
        "channel_type_not_supported",
        "team_not_supported",
        "not_allowed_token_type",
        "missing_recipient_team_id",
        "missing_recipient_user_id",
        "unknown_method",
    }
)


def slack_limits(scale: float = 1.0) -> SurfaceLimits:
    """Slack's documented limits, declared a little below the documented figures so jitter
    between our clock and Slack's never tips a call over. `scale` speeds every rate up by the
    same factor (tests against a fake with a shortened window)."""
    per_minute = scale / 60.0
    return SurfaceLimits(
        max_text=MAX_TEXT,
        # chat.postMessage: about 1 per second per channel, short bursts allowed.
        post=Rate(0.9 * scale, 2, Scope.CHANNEL),
        # chat.update: Tier 3 (50+/min), counted per workspace for the whole app.
        edit=Rate(45 * per_minute, 3, Scope.WORKSPACE),
        # chat.appendStream: Tier 4 (100+/min).
        append=Rate(90 * per_minute, 4, Scope.WORKSPACE),
        # chat.startStream / chat.stopStream: Tier 2 (20+/min).
        stream_control=Rate(18 * per_minute, 2, Scope.WORKSPACE),
    )


def translate(exc: BaseException, method: str) -> SurfaceError:
    """A Web API failure as the core's exception; the text names only method and error code."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        code = str(response.get("error", "unknown_error")) if isinstance(response.data, dict) else "unknown_error"
        if response.status_code == 429 or code == "ratelimited":
            headers = {k.lower(): v for k, v in (response.headers or {}).items()}
            raw = headers.get("retry-after", "1")
            raw = raw[0] if isinstance(raw, list) else raw
            try:
                retry_after = max(0.0, float(raw))
            except (TypeError, ValueError):
                retry_after = 1.0
            return RateLimited(retry_after, method)
        message = f"Slack {method} failed: {code}"
        if code in _DENIED:
            return AccessDenied(f"{message}: {_DENIED[code]}")
        if code in _GONE:
            return MessageGone(message)
        if code in _EXPIRED:
            return MessageExpired(message)
        if code in _STREAM_REFUSED and method.startswith("chat.") and "Stream" in method:
            return StreamRefused(message)
        return SurfaceError(message)
    if isinstance(exc, asyncio.TimeoutError):
        return SurfaceError(f"Slack {method} timed out")
    return SurfaceError(f"Slack {method} failed: {type(exc).__name__}")


class SlackSurface:
    """Replies in Slack threads. One instance per process; it keeps only per-stream text."""

    platform = "slack"

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        native: NativeStreaming = NativeStreaming.DM,
        rate_scale: float = 1.0,
        command: str = "/agent",
    ) -> None:
        self.client = client
        self.native = native
        self.limits = slack_limits(rate_scale)
        self.bind_hint = f"{command} bind <agent-id>"
        self._streamed: dict[str, str] = {}
        """Markdown already appended to each open native stream, by message ts."""
        self._askers: dict[ThreadKey, str] = {}
        """Who asked in a channel thread: a channel stream's required recipient."""

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self.client.api_call(method, json={k: v for k, v in kwargs.items() if v is not None})
        except (TimeoutError, SlackApiError, aiohttp.ClientError) as exc:
            raise translate(exc, method) from None
        return response.data if isinstance(response.data, dict) else {}

    # -- Surface -------------------------------------------------------------------------

    def render(self, part: MessagePart) -> SlackMessage:
        return render_part(part)

    async def post(self, thread: ThreadKey, payload: SlackMessage) -> MessageRef:
        data = await self._call(
            "chat.postMessage",
            channel=thread.channel,
            thread_ts=thread.thread or None,
            text=payload.text,
            attachments=list(payload.attachments),
            unfurl_links=False,
            unfurl_media=False,
        )
        return MessageRef(thread, str(data["ts"]), str(data.get("channel") or thread.channel))

    async def edit(self, message: MessageRef, payload: SlackMessage) -> None:
        # An empty `attachments` list is what removes earlier ones (the working line, Stop).
        await self._call(
            "chat.update",
            channel=message.channel or message.thread.channel,
            ts=message.id,
            text=payload.text,
            attachments=list(payload.attachments),
        )

    async def delete(self, message: MessageRef) -> None:
        await self._call("chat.delete", channel=message.channel or message.thread.channel, ts=message.id)

    # -- NativeStream ----------------------------------------------------------------------

    def note_asker(self, thread: ThreadKey, user: str) -> None:
        """Remember who asked, for `chat.startStream`'s recipient in channel threads."""
        if self.native is NativeStreaming.ALL and not _is_dm(thread):
            self._askers.pop(thread, None)
            self._askers[thread] = user
            while len(self._askers) > _MAX_ASKERS:  # replies refused before their stream started
                del self._askers[next(iter(self._askers))]

    def wants_native_stream(self, thread: ThreadKey) -> bool:
        if not thread.thread or self.native is NativeStreaming.OFF:
            return False
        if _is_dm(thread):
            return True
        return self.native is NativeStreaming.ALL and thread in self._askers

    async def start_stream(self, thread: ThreadKey) -> MessageRef:
        recipient = {} if _is_dm(thread) else {
            "recipient_team_id": thread.workspace,
            "recipient_user_id": self._askers.pop(thread, None),
        }
        data = await self._call("chat.startStream", channel=thread.channel, thread_ts=thread.thread, **recipient)
        ts = str(data["ts"])
        self._streamed[ts] = ""
        return MessageRef(thread, ts, str(data.get("channel") or thread.channel))

    async def append_stream(self, message: MessageRef, text: str) -> None:
        try:
            await self._call("chat.appendStream", channel=message.channel, ts=message.id, markdown_text=text)
        except StreamRefused:
            self._streamed.pop(message.id, None)
            raise
        self._streamed[message.id] = self._streamed.get(message.id, "") + text

    async def stop_stream(self, message: MessageRef, payload: SlackMessage) -> None:
        """Close the stream with the rest of the text and the extras as blocks.

        Should the final part no longer start with what was streamed (the core split the text
        below the streamed length), the stream is closed as is and the message then replaced
        with `chat.update`, so what stays is exactly the final part.
        """
        streamed = self._streamed.pop(message.id, "")
        consistent = payload.markdown.startswith(streamed)
        rest = payload.markdown[len(streamed):] if consistent else ""
        await self._call(
            "chat.stopStream",
            channel=message.channel,
            ts=message.id,
            markdown_text=rest or None,
            blocks=list(payload.blocks) or None,
        )
        if not consistent:
            await self.edit(message, payload)


def _is_dm(thread: ThreadKey) -> bool:
    """Slack DM channel ids start with D (assistant threads live in the DM too)."""
    return thread.channel.startswith("D")
