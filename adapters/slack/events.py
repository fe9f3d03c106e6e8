"""Slack events, the slash command and the Stop button, wired into a slack-bolt `AsyncApp`.

Bolt acknowledges Events API deliveries before our listener runs; the listener only decides
whether the bot should answer and starts the reply as a tracked background task, so the
HTTP response (or Socket Mode ack) never waits for the agent. Redeliveries carry the same
`event_id`, which the relay claims in the store, so a retry never yields a second reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import STOP_ACTION
from adapters.slack.settings import SlackSettings
from adapters.slack.surface import SlackSurface
from bridge.admin import AdminCommands, AdminRequest, binding_flag
from bridge.app import Bridge
from bridge.keys import ThreadKey
from bridge.relay import Inbound

log = logging.getLogger("adapters.slack.events")

PLATFORM = "slack"
_ANSWERED_SUBTYPES = frozenset({None, "thread_broadcast", "file_share", "bot_message"})
"""Message subtypes that are new questions; edits, deletions, joins etc. are not."""
_ADMIN_ONLY = frozenset({"bind", "unbind"})
_THINKING = "is thinking…"


class SlackEvents:
    """Translates Slack payloads into relay calls. Holds the in-flight reply tasks."""

    def __init__(self, bridge: Bridge, settings: SlackSettings, surface: SlackSurface, client: AsyncWebClient) -> None:
        self.bridge = bridge
        self.settings = settings
        self.surface = surface
        self.client = client
        self.admin = AdminCommands(bridge.store, bridge.agent.validate_agent_id, command=settings.slack_command)
        self.tasks: set[asyncio.Task[Any]] = set()

    def register(self, app: AsyncApp) -> None:
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.event("assistant_thread_started")(self._ignore)
        app.event("assistant_thread_context_changed")(self._ignore)
        app.command(self.settings.slack_command)(self.on_command)
        app.action(STOP_ACTION)(self.on_stop)

    async def _ignore(self) -> None:
        """Known events the bridge has nothing to do for (registered so bolt doesn't warn)."""

    # -- background work -------------------------------------------------------------------

    def spawn(self, work: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Slack reply task %s failed: %r", task.get_name(), task.exception())

    async def drain(self) -> None:
        """Shutdown: interrupt replies still streaming (the relay marks them interrupted)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- events ---------------------------------------------------------------------------

    async def on_mention(self, body: dict[str, Any], event: dict[str, Any], context: dict[str, Any]) -> None:
        if event.get("subtype") not in _ANSWERED_SUBTYPES or _is_self(event, context):
            return
        thread = ThreadKey(PLATFORM, _team(body, event), event["channel"], event.get("thread_ts") or event["ts"])
        if _from_bot(event) and not await self._allows_bots(thread):
            return
        text = _strip_mention(event.get("text", ""), context.get("bot_user_id"))
        self._answer(thread, event, text, body.get("event_id"))

    async def on_message(self, body: dict[str, Any], event: dict[str, Any], context: dict[str, Any]) -> None:
        if event.get("subtype") not in _ANSWERED_SUBTYPES or _is_self(event, context):
            return
        if "channel" not in event or "ts" not in event:
            return
        bot_user = context.get("bot_user_id")
        text = event.get("text", "")
        is_dm = event.get("channel_type") == "im"
        thread_ts = event.get("thread_ts")
        if not is_dm:
            if not thread_ts or (bot_user and f"<@{bot_user}>" in text):
                return  # top-level chatter, or a mention (that arrives as app_mention too)
            thread = ThreadKey(PLATFORM, _team(body, event), event["channel"], thread_ts)
            if await self.bridge.store.get_conversation(thread) is None:
                return  # a thread the bot never answered
            binding = await self.bridge.store.get_binding(PLATFORM, thread.workspace, thread.channel)
            options = binding.options if binding else None
            if binding_flag(options, "require_mention"):
                return
            if _from_bot(event) and not binding_flag(options, "allow_bots"):
                return
        else:
            thread = ThreadKey(PLATFORM, _team(body, event), event["channel"], thread_ts or event["ts"])
            if _from_bot(event) and not await self._allows_bots(thread):
                return
            if thread_ts:
                await self._set_status(thread)
        self._answer(thread, event, _strip_mention(text, bot_user), body.get("event_id"))

    def _answer(self, thread: ThreadKey, event: dict[str, Any], text: str, event_id: str | None) -> None:
        user = event.get("user") or event.get("bot_id") or ""
        self.surface.note_asker(thread, user)
        inbound = Inbound(thread, user, text, event_id, from_bot=_from_bot(event))
        self.spawn(self.bridge.relay.handle(inbound, self.surface), f"slack reply {thread}")

    async def _allows_bots(self, thread: ThreadKey) -> bool:
        binding = await self.bridge.store.get_binding(PLATFORM, thread.workspace, thread.channel)
        return binding is not None and binding_flag(binding.options, "allow_bots")

    async def _set_status(self, thread: ThreadKey) -> None:
        """The assistant-thread "is thinking…" line; Slack clears it when the reply arrives.
        Only apps with the Agents & AI Apps feature may set it, so a refusal is not an error."""
        if not self.settings.slack_assistant_status:
            return
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=thread.channel, thread_ts=thread.thread, status=_THINKING
            )
        except SlackApiError as exc:
            log.debug("assistant.threads.setStatus refused: %s", exc.response.get("error"))
        except (TimeoutError, aiohttp.ClientError) as exc:  # must not cost the reply itself
            log.debug("assistant.threads.setStatus failed: %s", type(exc).__name__)

    # -- slash command ----------------------------------------------------------------------

    async def on_command(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], respond: Callable[..., Awaitable[Any]]) -> None:
        await ack()
        text = (body.get("text") or "").strip()
        user = body.get("user_id", "")
        thread = ThreadKey(PLATFORM, body.get("team_id", ""), body.get("channel_id", ""), body.get("thread_ts") or "")
        sub = text.split(maxsplit=1)[0].lower() if text else "help"
        is_admin = sub in _ADMIN_ONLY and await self.is_admin(user)
        answer = await self.admin.run(AdminRequest(thread, user, is_admin, text))
        await respond(text=answer.text, response_type="ephemeral", replace_original=False)

    async def is_admin(self, user: str) -> bool:
        """Workspace admins and owners (per `users.info`), plus SLACK_ADMIN_USERS."""
        if user in self.settings.admin_users:
            return True
        try:
            info = await self.client.users_info(user=user)
        except SlackApiError as exc:
            log.warning("users.info failed for %s: %s", user, exc.response.get("error"))
            return False
        profile = info.get("user") or {}
        return bool(profile.get("is_admin") or profile.get("is_owner") or profile.get("is_primary_owner"))

    # -- Stop button ------------------------------------------------------------------------

    async def on_stop(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any]) -> None:
        await ack()
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id", "")
        ts = message.get("thread_ts") or message.get("ts")
        if not channel or not ts:
            return
        thread = ThreadKey(PLATFORM, team, channel, ts)
        if not await self.bridge.relay.stop_thread(thread):
            log.info("Stop pressed in %s, but no reply is streaming there", thread)


def _team(body: dict[str, Any], event: dict[str, Any]) -> str:
    return str(body.get("team_id") or event.get("team") or "")


def _is_self(event: dict[str, Any], context: dict[str, Any]) -> bool:
    user, bot_id = event.get("user"), event.get("bot_id")
    return bool(
        (user and user == context.get("bot_user_id")) or (bot_id and bot_id == context.get("bot_id"))
    )


def _from_bot(event: dict[str, Any]) -> bool:
    return bool(event.get("bot_id")) or event.get("subtype") == "bot_message"


def _strip_mention(text: str, bot_user: str | None) -> str:
    """Remove the bot's own `<@U…>` (with an optional `|name`) from the question."""
    if not bot_user:
        return text.strip()
    return re.sub(rf"<@{re.escape(bot_user)}(?:\|[^>]*)?>\s*[:,]?", "", text).strip()
