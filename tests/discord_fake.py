"""A local Discord for the adapter's tests: a real aiohttp REST API and a real gateway websocket.

REST answers with Discord's JSON shapes and error codes, validates message bodies against
Discord's limits (2,000 characters, 10 embeds, 6,000 embed characters...), and enforces
about 5 message creates and 5 edits per 5 seconds per channel with real 429s (body
`retry_after`, `Retry-After` and `X-RateLimit-*` headers). Interaction tokens expire after
`token_lifetime` seconds (Discord: 15 minutes) with 401 / 50027.

The gateway speaks discord.py's protocol: HELLO, IDENTIFY (with shards), READY,
GUILD_CREATE, heartbeats and ACKs, then dispatches whatever a test sends
(`send_slash`, `send_message`, `press_button`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_TOKEN = "MTEx.FakeBot.tokenSecretValue123"
APP_ID = "111"
BOT_ID = "111"
GUILD_ID = "222"
CHANNEL_ID = "333"
OTHER_CHANNEL_ID = "334"
ADMIN_PERMISSIONS = str((1 << 4) | (1 << 10) | (1 << 11))  # manage channels, view, send
MEMBER_PERMISSIONS = str((1 << 10) | (1 << 11))
MESSAGE_CONTENT_INTENT = 1 << 15
DISCORD_EPOCH_MS = 1_420_070_400_000


def _json(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Exactly `application/json`, as Discord sends it (discord.py compares the header verbatim)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _user(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
    }


BOT_USER = _user(BOT_ID, "agent-bridge", bot=True)


@dataclass
class Window:
    """Discord-style per-channel limit, enforced as a sliding window (stricter than Discord)."""

    limit: int
    seconds: float
    recent: deque[float] = field(default_factory=deque)

    def admit(self, now: float) -> float | None:
        """None when the call may pass, else the seconds to wait."""
        while self.recent and now - self.recent[0] >= self.seconds:
            self.recent.popleft()
        if len(self.recent) >= self.limit:
            return self.seconds - (now - self.recent[0])
        self.recent.append(now)
        return None


@dataclass
class Call:
    method: str
    route: str
    status: int
    channel: str | None = None
    at: float = 0.0


@dataclass
class Interaction:
    id: str
    token: str
    channel_id: str
    guild_id: str | None
    created: float
    responded: int | None = None
    original: str | None = None
    ephemeral: bool = False


@dataclass
class Session:
    ws: web.WebSocketResponse
    shard: tuple[int, int]
    seq: int = 0

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        await self.ws.send_str(
            json.dumps({"op": 0, "t": event, "s": self.seq, "d": data})
        )


class FakeDiscord:
    def __init__(
        self,
        *,
        edit_limit: int = 5,
        post_limit: int = 5,
        window: float = 5.0,
        token_lifetime: float = 900.0,
        message_content_enabled: bool = True,
    ) -> None:
        self.message_content_enabled = message_content_enabled
        """Whether the portal's Message Content switch is on (off: IDENTIFY with it closes 4014)."""
        self.edit_limit, self.post_limit, self.window = edit_limit, post_limit, window
        self.token_lifetime = token_lifetime
        self._sequence = itertools.count(1)
        self.channels: dict[str, dict[str, Any]] = {
            CHANNEL_ID: self._text_channel(CHANNEL_ID, "general"),
            OTHER_CHANNEL_ID: self._text_channel(OTHER_CHANNEL_ID, "random"),
        }
        self.messages: dict[str, dict[str, Any]] = {}
        self.interactions: dict[str, Interaction] = {}
        self.calls: list[Call] = []
        self.bodies: list[str] = []
        """Every request body the bridge sent (checked for secrets when the fake stops)."""
        self.commands: dict[str | None, list[dict[str, Any]]] = {}
        self.identifies: list[dict[str, Any]] = []
        self.sessions: list[Session] = []
        self._windows: dict[tuple[str, str], Window] = {}
        self._changed = asyncio.Condition()
        self.base = ""

    def assert_no_secrets(self) -> None:
        """No token in any request body the bridge sent, nor in any message it showed."""
        from tests.secret_guard import leaks

        found = leaks([*self.bodies, *(json.dumps(m, default=str) for m in self.messages.values())])
        assert not found, f"secret(s) reached Discord: {[s[:6] + '…' for s in found]}"

    def snowflake(self) -> str:
        """A real Discord id: milliseconds since 2015 in the top bits (discord.py reads them)."""
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((millis << 22) | (next(self._sequence) & 0x3FFFFF))

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/gateway"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        r = app.router
        api = "/api/v10"
        r.add_get(f"{api}/gateway/bot", self._gateway_bot)
        r.add_get(f"{api}/users/@me", self._me)
        r.add_get(f"{api}/oauth2/applications/@me", self._application)
        r.add_put(f"{api}/applications/{{app}}/commands", self._put_commands)
        r.add_put(
            f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self._put_commands
        )
        r.add_post(f"{api}/interactions/{{id}}/{{token}}/callback", self._callback)
        r.add_post(f"{api}/webhooks/{{app}}/{{token}}", self._follow_up)
        r.add_route(
            "*",
            f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}",
            self._webhook_message,
        )
        r.add_post(f"{api}/channels/{{channel}}/messages", self._create_message)
        r.add_route(
            "*",
            f"{api}/channels/{{channel}}/messages/{{message}}",
            self._channel_message,
        )
        r.add_post(
            f"{api}/channels/{{channel}}/messages/{{message}}/threads",
            self._start_thread,
        )
        r.add_get("/gateway", self._gateway)
        return app

    # -- what tests look at ------------------------------------------------------------------

    def count(
        self, method: str | None = None, route_part: str = "", status: int | None = None
    ) -> int:
        return sum(
            1
            for c in self.calls
            if (method is None or c.method == method)
            and route_part in c.route
            and (status is None or c.status == status)
        )

    @property
    def rate_limited(self) -> int:
        return self.count(status=429)

    def in_channel(self, channel_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m["channel_id"] == channel_id]

    def posted(self, channel_id: str) -> list[dict[str, Any]]:
        """Messages the bot made through the API in a channel (not ones a test delivered)."""
        return [
            m
            for m in self.in_channel(channel_id)
            if m["author"]["id"] == BOT_ID and not m.get("delivered")
        ]

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 15.0
    ) -> Any:
        async def check() -> Any:
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(check(), timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- sending events ----------------------------------------------------------------------------

    async def send_slash(
        self,
        name: str,
        options: list[dict[str, Any]],
        *,
        channel_id: str = CHANNEL_ID,
        user: dict[str, Any] | None = None,
        permissions: str = MEMBER_PERMISSIONS,
        guild_id: str | None = GUILD_ID,
    ) -> Interaction:
        data = {
            "id": str(self.snowflake()),
            "name": name,
            "type": 1,
            "options": options,
        }
        return await self._interact(2, data, channel_id, user, permissions, guild_id)

    async def press_button(
        self,
        custom_id: str,
        message_id: str,
        *,
        channel_id: str = CHANNEL_ID,
        user: dict[str, Any] | None = None,
        permissions: str = MEMBER_PERMISSIONS,
    ) -> Interaction:
        message = dict(self.messages[message_id])
        return await self._interact(
            3,
            {"custom_id": custom_id, "component_type": 2},
            channel_id,
            user,
            permissions,
            GUILD_ID,
            message=message,
        )

    async def _interact(
        self,
        kind: int,
        data: dict[str, Any],
        channel_id: str,
        user: dict[str, Any] | None,
        permissions: str,
        guild_id: str | None,
        message: dict[str, Any] | None = None,
    ) -> Interaction:
        user = user or _user("444", "asker")
        interaction = Interaction(
            str(self.snowflake()),
            f"itoken-{self.snowflake()}",
            channel_id,
            guild_id,
            time.monotonic(),
        )
        self.interactions[interaction.token] = interaction
        payload: dict[str, Any] = {
            "id": interaction.id,
            "application_id": APP_ID,
            "type": kind,
            "data": data,
            "token": interaction.token,
            "version": 1,
            "channel_id": channel_id,
            "channel": self.channels[channel_id],
            "app_permissions": "8",
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 8_388_608,
            "authorizing_integration_owners": {"0": guild_id}
            if guild_id
            else {"1": user["id"]},
            "context": 0 if guild_id else 1,
        }
        if guild_id:
            payload["guild_id"] = guild_id
            payload["guild_locale"] = "en-US"
            payload["member"] = {
                "user": user,
                "roles": [],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": permissions,
                "nick": None,
                "avatar": None,
            }
        else:
            payload["user"] = user
        if message is not None:
            payload["message"] = message
        await self._dispatch("INTERACTION_CREATE", payload, guild_id)
        return interaction

    async def send_message(
        self,
        content: str,
        *,
        channel_id: str = CHANNEL_ID,
        author: dict[str, Any] | None = None,
        mention_bot: bool = False,
        guild_id: str | None = GUILD_ID,
    ) -> dict[str, Any]:
        author = author or _user("444", "asker")
        if mention_bot:
            content = f"<@{BOT_ID}> {content}"
        message = self._message(
            channel_id, author, content, mentions=[BOT_USER] if mention_bot else []
        )
        message["delivered"] = True
        payload = dict(message)
        if guild_id and not mention_bot and not self._intent(MESSAGE_CONTENT_INTENT):
            payload["content"] = ""  # what Discord sends without the privileged intent
        if guild_id:
            payload["guild_id"] = guild_id
            payload["member"] = {
                "roles": [],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        await self._dispatch("MESSAGE_CREATE", payload, guild_id)
        return message

    def _intent(self, bit: int) -> bool:
        return bool(self.identifies) and all(
            i.get("intents", 0) & bit for i in self.identifies
        )

    def dm_channel(self, user: dict[str, Any]) -> str:
        channel_id = str(self.snowflake())
        self.channels[channel_id] = {
            "id": channel_id,
            "type": 1,
            "recipients": [user],
            "last_message_id": None,
        }
        return channel_id

    async def _dispatch(
        self, event: str, data: dict[str, Any], guild_id: str | None
    ) -> None:
        if not self.sessions:
            raise RuntimeError("no gateway session is connected")
        for session in self.sessions:
            shard_id, shards = session.shard
            wanted = (int(guild_id) >> 22) % shards if guild_id else 0
            if wanted == shard_id:
                await session.dispatch(event, data)

    # -- REST: plumbing -----------------------------------------------------------------------

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[..., Any]
    ) -> web.StreamResponse:
        response = await handler(request)
        if request.body_exists:
            self.bodies.append((await request.read()).decode("utf-8", "replace"))
        info = request.match_info
        route = (
            request.match_info.route.resource.canonical
            if request.match_info.route.resource
            else request.path
        )
        self.calls.append(
            Call(
                request.method,
                route,
                response.status,
                info.get("channel"),
                time.monotonic(),
            )
        )
        await self._notify()
        return response

    def _text_channel(self, channel_id: str, name: str) -> dict[str, Any]:
        return {
            "id": channel_id,
            "type": 0,
            "guild_id": GUILD_ID,
            "name": name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }

    def _message(
        self, channel_id: str, author: dict[str, Any], content: str, **extra: Any
    ) -> dict[str, Any]:
        message_id = str(self.snowflake())
        message = {
            "id": message_id,
            "channel_id": channel_id,
            "author": author,
            "content": content,
            "timestamp": "2024-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            "history": [],
        }
        message.update(extra)
        self.messages[message_id] = message
        return message

    @staticmethod
    def _error(status: int, code: int, message: str, **extra: Any) -> web.Response:
        return _json({"message": message, "code": code, **extra}, status=status)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {BOT_TOKEN}"

    def _limited(self, kind: str, channel_id: str) -> web.Response | None:
        limit = self.edit_limit if kind == "edit" else self.post_limit
        window = self._windows.setdefault(
            (kind, channel_id), Window(limit, self.window)
        )
        wait = window.admit(time.monotonic())
        if wait is None:
            return None
        headers = {
            "Retry-After": f"{wait:.3f}",
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + wait:.3f}",
            "X-RateLimit-Reset-After": f"{wait:.3f}",
            "X-RateLimit-Bucket": f"fake-{kind}",
            "X-RateLimit-Scope": "user",
        }
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(wait, 3),
            "global": False,
        }
        return _json(body, status=429, headers=headers)

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str | None:
        """Why Discord would refuse this message body (50035 Invalid Form Body), if it would."""
        content = body.get("content") or ""
        embeds = body.get("embeds") or []
        components = body.get("components") or []
        if len(content) > 2000:
            return f"content: must be 2000 or fewer in length (got {len(content)})"
        if len(embeds) > 10:
            return "embeds: must be 10 or fewer in length"
        total = 0
        for embed in embeds:
            title, description = embed.get("title", ""), embed.get("description", "")
            if len(title) > 256 or len(description) > 4096:
                return "embeds: title or description too long"
            fields = embed.get("fields", [])
            if len(fields) > 25 or any(
                len(f["name"]) > 256 or len(f["value"]) > 1024 for f in fields
            ):
                return "embeds: field too long"
            total += (
                len(title)
                + len(description)
                + len(embed.get("footer", {}).get("text", ""))
            )
            total += sum(len(f["name"]) + len(f["value"]) for f in fields)
        if total > 6000:
            return f"embeds: total size must be 6000 or fewer (got {total})"
        for row in components:
            for button in row.get("components", []):
                if len(button.get("custom_id", "")) > 100:
                    return "components: custom_id must be 100 or fewer in length"
        if not content.strip() and not embeds and not components:
            return "Cannot send an empty message"
        return None

    def _apply(self, message: dict[str, Any], body: dict[str, Any]) -> None:
        message["history"].append(
            {k: message[k] for k in ("content", "embeds", "components")}
        )
        for key in ("content", "embeds", "components"):
            if key in body:
                message[key] = body[key]
        message["flags"] = message["flags"] & ~128  # no longer "thinking"
        message["edited_timestamp"] = "2024-01-01T00:00:01+00:00"

    # -- REST: identity -------------------------------------------------------------------------

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, 0, "401: Unauthorized")
        limit = {
            "total": 1000,
            "remaining": 999,
            "reset_after": 0,
            "max_concurrency": 1,
        }
        return _json(
            {"url": self.gateway_url, "shards": 1, "session_start_limit": limit}
        )

    async def _me(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, 0, "401: Unauthorized")
        return _json({**BOT_USER, "flags": 0, "mfa_enabled": False, "verified": True})

    async def _application(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, 0, "401: Unauthorized")
        return _json(
            {
                "id": APP_ID,
                "name": "agent-bridge",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": _user("999", "owner"),
                "verify_key": "00",
                "flags": 0,
                "team": None,
                "summary": "",
                "rpc_origins": [],
            }
        )

    async def _put_commands(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, 0, "401: Unauthorized")
        commands = await request.json()
        guild = request.match_info.get("guild")
        stored = [
            {
                **c,
                "id": str(self.snowflake()),
                "application_id": APP_ID,
                "version": "1",
                **({"guild_id": guild} if guild else {}),
            }
            for c in commands
        ]
        self.commands[guild] = stored
        return _json(stored)

    # -- REST: interactions ---------------------------------------------------------------------

    def _interaction(self, token: str) -> Interaction | web.Response:
        interaction = self.interactions.get(token)
        if interaction is None:
            return self._error(404, 10015, "Unknown Webhook")
        if time.monotonic() - interaction.created > self.token_lifetime:
            return self._error(401, 50027, "Invalid Webhook Token")
        return interaction

    async def _callback(self, request: web.Request) -> web.Response:
        interaction = self.interactions.get(request.match_info["token"])
        if interaction is None or interaction.id != request.match_info["id"]:
            return self._error(404, 10062, "Unknown interaction")
        if interaction.responded is not None:
            return self._error(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - interaction.created > 3.0:
            return self._error(404, 10062, "Unknown interaction")
        body = await request.json()
        kind, data = body["type"], body.get("data") or {}
        interaction.responded = kind
        interaction.ephemeral = bool(data.get("flags", 0) & 64)
        if kind in (4, 5):
            if kind == 4 and (problem := self._invalid(data)):
                return self._error(400, 50035, f"Invalid Form Body: {problem}")
            message = self._message(
                interaction.channel_id,
                BOT_USER,
                data.get("content", "") if kind == 4 else "",
                flags=(128 if kind == 5 else 0) | (64 if interaction.ephemeral else 0),
                interaction_token=interaction.token,
            )
            interaction.original = message["id"]
        return web.Response(status=204)

    async def _follow_up(self, request: web.Request) -> web.Response:
        found = self._interaction(request.match_info["token"])
        if isinstance(found, web.Response):
            return found
        if found.responded is None:
            return self._error(404, 10015, "Unknown Webhook")
        body = await request.json()
        if problem := self._invalid(body):
            return self._error(400, 50035, f"Invalid Form Body: {problem}")
        if limited := self._limited("post", found.channel_id):
            return limited
        message = self._message(
            found.channel_id,
            BOT_USER,
            body.get("content", ""),
            interaction_token=found.token,
        )
        message.update({k: body[k] for k in ("embeds", "components") if k in body})
        return _json(message)

    async def _webhook_message(self, request: web.Request) -> web.Response:
        found = self._interaction(request.match_info["token"])
        if isinstance(found, web.Response):
            return found
        message_id = request.match_info["message"]
        if message_id == "@original":
            message_id = found.original or ""
        message = self.messages.get(message_id)
        if message is None or message.get("interaction_token") != found.token:
            return self._error(404, 10008, "Unknown Message")
        if request.method == "GET":
            return _json(message)
        if request.method == "DELETE":
            del self.messages[message_id]
            return web.Response(status=204)
        if request.method != "PATCH":
            return self._error(405, 0, "405: Method Not Allowed")
        body = await request.json()
        if problem := self._invalid(
            {**{k: message[k] for k in ("content", "embeds", "components")}, **body}
        ):
            return self._error(400, 50035, f"Invalid Form Body: {problem}")
        if limited := self._limited("edit", found.channel_id):
            return limited
        self._apply(message, body)
        return _json(message)

    # -- REST: channels -------------------------------------------------------------------------

    async def _create_message(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, 0, "401: Unauthorized")
        channel_id = request.match_info["channel"]
        channel = self.channels.get(channel_id)
        if channel is None:
            return self._error(404, 10003, "Unknown Channel")
        if channel.get("thread_metadata", {}).get("archived"):
            return self._error(400, 50083, "Thread is archived")
        body = await request.json()
        if problem := self._invalid(body):
            return self._error(400, 50035, f"Invalid Form Body: {problem}")
        bucket = channel.get("parent_id") or channel_id
        if limited := self._limited("post", bucket):
            return limited
        reference = body.get("message_reference")
        message = self._message(
            channel_id, BOT_USER, body.get("content", ""), message_reference=reference
        )
        message.update({k: body[k] for k in ("embeds", "components") if k in body})
        return _json(message)

    async def _channel_message(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, 0, "401: Unauthorized")
        channel_id, message_id = (
            request.match_info["channel"],
            request.match_info["message"],
        )
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != channel_id:
            return self._error(404, 10008, "Unknown Message")
        if message["author"]["id"] != BOT_ID:
            return self._error(
                403, 50005, "Cannot edit a message authored by another user"
            )
        if request.method == "DELETE":
            del self.messages[message_id]
            return web.Response(status=204)
        if request.method != "PATCH":
            return self._error(405, 0, "405: Method Not Allowed")
        body = await request.json()
        if problem := self._invalid(
            {**{k: message[k] for k in ("content", "embeds", "components")}, **body}
        ):
            return self._error(400, 50035, f"Invalid Form Body: {problem}")
        bucket = self.channels.get(channel_id, {}).get("parent_id") or channel_id
        if limited := self._limited("edit", bucket):
            return limited
        self._apply(message, body)
        return _json(message)

    async def _start_thread(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, 0, "401: Unauthorized")
        channel_id, message_id = (
            request.match_info["channel"],
            request.match_info["message"],
        )
        if (
            message_id not in self.messages
            or self.messages[message_id]["channel_id"] != channel_id
        ):
            return self._error(404, 10008, "Unknown Message")
        if message_id in self.channels:
            return self._error(
                400, 160004, "A thread has already been created for this message"
            )
        body = await request.json()
        name = body.get("name", "")
        if not 1 <= len(name) <= 100:
            return self._error(
                400,
                50035,
                "Invalid Form Body: name must be between 1 and 100 in length",
            )
        thread = {
            "id": message_id,
            "type": 11,
            "guild_id": GUILD_ID,
            "parent_id": channel_id,
            "name": name,
            "owner_id": BOT_ID,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": "2024-01-01T00:00:00+00:00",
                "locked": False,
            },
        }
        self.channels[message_id] = thread
        await self._dispatch(
            "THREAD_CREATE", {**thread, "newly_created": True}, GUILD_ID
        )
        return _json(thread, status=201)

    # -- gateway -----------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(
            json.dumps(
                {"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}
            )
        )
        session: Session | None = None
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(frame.data)
                op = payload.get("op")
                if op == 1:
                    await ws.send_str(
                        json.dumps({"op": 11, "d": None, "s": None, "t": None})
                    )
                elif op == 2:
                    data = payload["d"]
                    if data.get("token") != BOT_TOKEN:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    if (
                        data.get("intents", 0) & MESSAGE_CONTENT_INTENT
                        and not self.message_content_enabled
                    ):
                        await ws.close(code=4014, message=b"Disallowed intent(s).")
                        break
                    self.identifies.append(
                        {k: v for k, v in data.items() if k != "token"}
                    )
                    shard = tuple(data.get("shard") or (0, 1))
                    session = Session(ws, (int(shard[0]), int(shard[1])))
                    await self._ready(session)
                    self.sessions.append(session)
                    await self._notify()
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
        return ws

    async def _ready(self, session: Session) -> None:
        shard_id, shards = session.shard
        mine = (int(GUILD_ID) >> 22) % shards == shard_id
        await session.dispatch(
            "READY",
            {
                "v": 10,
                "user": BOT_USER,
                "guilds": [{"id": GUILD_ID, "unavailable": True}] if mine else [],
                "session_id": f"session-{shard_id}",
                "resume_gateway_url": self.gateway_url,
                "shard": [shard_id, shards],
                "application": {"id": APP_ID, "flags": 0},
                "private_channels": [],
                "relationships": [],
            },
        )
        if mine:
            threads = [c for c in self.channels.values() if c["type"] == 11]
            await session.dispatch(
                "GUILD_CREATE",
                {
                    "id": GUILD_ID,
                    "name": "Fake guild",
                    "icon": None,
                    "owner_id": "999",
                    "unavailable": False,
                    "member_count": 3,
                    "large": False,
                    "features": [],
                    "emojis": [],
                    "stickers": [],
                    "members": [],
                    "voice_states": [],
                    "presences": [],
                    "stage_instances": [],
                    "guild_scheduled_events": [],
                    "roles": [
                        {
                            "id": GUILD_ID,
                            "name": "@everyone",
                            "permissions": MEMBER_PERMISSIONS,
                            "position": 0,
                            "color": 0,
                            "hoist": False,
                            "managed": False,
                            "mentionable": False,
                            "flags": 0,
                        }
                    ],
                    "channels": [c for c in self.channels.values() if c["type"] == 0],
                    "threads": threads,
                    "joined_at": "2024-01-01T00:00:00+00:00",
                    "verification_level": 0,
                    "default_message_notifications": 0,
                    "explicit_content_filter": 0,
                    "mfa_level": 0,
                    "nsfw_level": 0,
                    "premium_tier": 0,
                    "preferred_locale": "en-US",
                    "system_channel_flags": 0,
                },
            )


@asynccontextmanager
async def running_fake_discord(**options: Any) -> AsyncIterator[FakeDiscord]:
    """Serves a fresh fake Discord on a free loopback port."""
    fake = FakeDiscord(**options)
    runner = web.AppRunner(fake.app(), access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        fake.base = f"http://{host}:{port}"
        yield fake
    finally:
        for session in list(fake.sessions):
            await session.ws.close()
        await runner.cleanup()
    fake.assert_no_secrets()
