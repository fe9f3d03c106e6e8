"""A local fake of the Slack Web API (and of Slack's side of event delivery), for tests.

A real aiohttp server that slack_sdk reaches through `base_url`. It answers the methods the
adapter uses with Slack's JSON shapes (`ok`/`error`), keeps messages with their full edit
history, and enforces Slack's documented rate limits as token buckets, answering a real
HTTP 429 with `Retry-After` when a call exceeds them:

- `chat.postMessage`: 1 per second per channel, bursts of 3;
- `chat.update`: Tier 3, 50 per minute per workspace, bursts of 5;
- `chat.startStream` / `chat.stopStream`: Tier 2, 20 per minute each, bursts of 3;
- `chat.appendStream`: Tier 4, 100 per minute, bursts of 10.

`time_scale` shortens the window (10 → the per-minute limits apply per 6 s) so a test of
many concurrent replies stays short; the adapter must then be run with the same
SLACK_RATE_SCALE. Every call is recorded in `calls`, 429s included.

It also signs event payloads as Slack does (`signed_headers`), serves `response_url`s, and
plays Slack's side of Socket Mode (`apps.connections.open`, then a WebSocket that says
hello, sends envelopes and records their acks).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

BOT_TOKEN = "xoxb-1111-2222-fakefakefakefake"
APP_TOKEN = "xapp-1-A0001-3333-fakeappfakeapp"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0001"
BOT_USER = "UBOT0001"
BOT_ID = "BBOT0001"

# (per minute, burst) at time_scale 1, keyed by method; postMessage is per channel.
LIMITS: Mapping[str, tuple[float, int]] = MappingProxyType(
    {
        "chat.postMessage": (60.0, 3),
        "chat.update": (50.0, 5),
        "chat.startStream": (20.0, 3),
        "chat.stopStream": (20.0, 3),
        "chat.appendStream": (100.0, 10),
    }
)
TEXT_LIMIT = 4000


@dataclass(slots=True)
class Call:
    method: str
    args: dict[str, Any]
    status: int
    error: str | None
    at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Message:
    channel: str
    ts: str
    thread_ts: str | None
    text: str = ""
    attachments: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    streaming: bool = False
    markdown: str = ""
    versions: list[str] = field(default_factory=list)
    deleted: bool = False


class _Bucket:
    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when allowed, else the seconds until a token is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.per_second


class FakeSlack:
    """State and behaviour of the fake workspace; `app` serves it."""

    def __init__(self, *, time_scale: float = 1.0, channels: tuple[str, ...] = ("C0001", "C0002", "D0001")) -> None:
        self.time_scale = time_scale
        self.channels = set(channels)
        self.messages: dict[tuple[str, str], Message] = {}
        self.calls: list[Call] = []
        self.responses: list[dict[str, Any]] = []
        self.users: dict[str, dict[str, Any]] = {
            "UADMIN": {"id": "UADMIN", "is_admin": True, "is_owner": False},
            "UUSER": {"id": "UUSER", "is_admin": False, "is_owner": False},
        }
        self.fail_next: dict[str, list[str]] = {}
        """Method → error codes to answer on its next calls (one per call)."""
        self.throttle_next: dict[str, int] = {}
        """Method → how many of its next calls get a 429 (Retry-After 1) whatever the budget."""
        self.expire_streams_after: int | None = None
        """After this many appends to a stream, it leaves the streaming state (as Slack does)."""
        self._buckets: dict[tuple[str, ...], _Bucket] = {}
        self._ts = itertools.count(1)
        self.url = ""
        self.changed = asyncio.Event()
        self.sockets: list[web.WebSocketResponse] = []
        self.acks: list[str] = []

    # -- helpers for tests --------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def count(self, method: str, *, status: int | None = None) -> int:
        return sum(1 for c in self.calls if c.method == method and (status is None or c.status == status))

    @property
    def rate_limited(self) -> int:
        return sum(1 for c in self.calls if c.status == 429)

    def thread_messages(self, channel: str, thread_ts: str) -> list[Message]:
        return sorted(
            (m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts and not m.deleted),
            key=lambda m: float(m.ts),
        )

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        """Wait until `predicate()` is truthy (re-checked after every API call)."""
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), 0.2)
                except TimeoutError:
                    pass
            return result

    def signed_headers(self, body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        base = b"v0:" + ts.encode() + b":" + body
        signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}

    def response_url(self) -> str:
        return f"{self.url}/respond/{next(self._ts)}"

    async def send_envelope(self, kind: str, payload: dict[str, Any], envelope_id: str, *, retry_attempt: int = 0) -> None:
        """Deliver one Socket Mode envelope on the open connection."""
        socket = await self.wait_for(lambda: next((s for s in self.sockets if not s.closed), None))
        await socket.send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": retry_attempt,
                "retry_reason": "timeout" if retry_attempt else "",
            }
        )

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self.sockets.append(socket)
        await socket.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0001"}})
        async for message in socket:
            data = json.loads(message.data)
            if "envelope_id" in data:
                self.acks.append(data["envelope_id"])
                self.changed.set()
        return socket

    def assert_no_secrets(self) -> None:
        """No token or signing secret in any request body the bridge sent, nor in any message shown."""
        from tests.secret_guard import leaks

        texts = [json.dumps(c.args, default=str) for c in self.calls]
        texts += [json.dumps(r, default=str) for r in self.responses]
        texts += [f"{m.text} {m.markdown} {m.attachments} {m.blocks} {m.versions}" for m in self.messages.values()]
        found = leaks(texts)
        assert not found, f"secret(s) reached Slack: {[s[:6] + '…' for s in found]}"

    # -- the server ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        app.router.add_post("/respond/{id}", self._respond)
        app.router.add_get("/socket", self._socket)
        return app

    async def _respond(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        self.changed.set()
        return web.Response(text="ok")

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json":
                args.update(json.loads(raw or b"{}"))
            else:
                args.update(parse_qsl(raw.decode()))
        status, body, headers = self._dispatch(request, method, args)
        self.calls.append(Call(method, args, status, None if body.get("ok") else body.get("error")))
        self.changed.set()
        return web.json_response(body, status=status, headers=headers)

    def _dispatch(self, request: web.Request, method: str, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "apps.connections.open":
            if request.headers.get("Authorization") != f"Bearer {APP_TOKEN}":
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            return 200, {"ok": True, "url": self.url.replace("http://", "ws://") + "/socket"}, {}
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if self.throttle_next.get(method):
            self.throttle_next[method] -= 1
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}
        if method in LIMITS:
            per_minute, burst = LIMITS[method]
            key = (method, args.get("channel", "")) if method == "chat.postMessage" else (method,)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(per_minute / 60.0 * self.time_scale, burst)
            wait = bucket.take()
            if wait > 0:
                retry = str(math.ceil(wait)) if self.time_scale == 1 else f"{wait:.3f}"
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": retry}
        queued = self.fail_next.get(method)
        if queued:
            return 200, {"ok": False, "error": queued.pop(0)}, {}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        try:
            return 200, {"ok": True, **handler(args)}, {}
        except _ApiError as exc:
            return 200, {"ok": False, "error": str(exc)}, {}

    # -- methods ------------------------------------------------------------------------

    def _new_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _channel(self, args: dict[str, Any], key: str = "channel") -> str:
        channel = args.get(key)
        if not channel:
            raise _ApiError("invalid_arguments")
        if channel not in self.channels:
            raise _ApiError("channel_not_found")
        return channel

    def _message(self, args: dict[str, Any]) -> Message:
        channel = self._channel(args)
        message = self.messages.get((channel, str(args.get("ts"))))
        if message is None or message.deleted:
            raise _ApiError("message_not_found")
        return message

    @staticmethod
    def _json_arg(value: Any) -> list[dict[str, Any]]:
        return json.loads(value) if isinstance(value, str) else list(value or [])

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://fake.slack.com/", "team": "Fake", "user": "agent", "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        text = args.get("text") or ""
        attachments = self._json_arg(args.get("attachments"))
        if not text and not attachments and not args.get("blocks"):
            raise _ApiError("no_text")
        if len(text) > TEXT_LIMIT:
            raise _ApiError("msg_too_long")
        thread_ts = args.get("thread_ts") or None
        message = Message(channel, self._new_ts(), thread_ts, text, attachments, versions=[text])
        self.messages[(channel, message.ts)] = message
        return {"channel": channel, "ts": message.ts, "message": {"text": text, "ts": message.ts, "bot_id": BOT_ID}}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._message(args)
        if message.streaming:
            raise _ApiError("streaming_state_conflict")
        text = args.get("text") or ""
        if len(text) > TEXT_LIMIT:
            raise _ApiError("msg_too_long")
        message.text = text
        if "attachments" in args:  # absent keeps them, [] removes them (as Slack documents)
            message.attachments = self._json_arg(args["attachments"])
        message.versions.append(text)
        return {"channel": message.channel, "ts": message.ts, "text": text}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._message(args)
        message.deleted = True
        return {"channel": message.channel, "ts": message.ts}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self._channel(args)
        return {"message_ts": self._new_ts()}

    def _m_chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        if not args.get("thread_ts"):
            raise _ApiError("invalid_arguments")
        if not channel.startswith("D") and not args.get("recipient_user_id"):
            raise _ApiError("missing_recipient_user_id")
        text = args.get("markdown_text") or ""
        message = Message(channel, self._new_ts(), args["thread_ts"], streaming=True, markdown=text, versions=[text])
        self.messages[(channel, message.ts)] = message
        return {"channel": channel, "ts": message.ts}

    def _m_chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._message(args)
        if not message.streaming:
            raise _ApiError("message_not_in_streaming_state")
        if not args.get("markdown_text"):
            raise _ApiError("invalid_arguments")
        message.markdown += args["markdown_text"]
        message.versions.append(message.markdown)
        if self.expire_streams_after is not None and len(message.versions) > self.expire_streams_after:
            message.streaming = False
        return {"channel": message.channel, "ts": message.ts}

    def _m_chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._message(args)
        if not message.streaming:
            raise _ApiError("message_not_in_streaming_state")
        message.markdown += args.get("markdown_text") or ""
        message.blocks = self._json_arg(args.get("blocks"))
        message.streaming = False
        message.versions.append(message.markdown)
        return {"channel": message.channel, "ts": message.ts, "message": {"text": message.markdown}}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": user}

    def _m_assistant_threads_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        self._channel(args, "channel_id")
        return {}


class _ApiError(Exception):
    pass


@asynccontextmanager
async def running_fake_slack(**options: Any) -> AsyncIterator[FakeSlack]:
    """Serve a fresh fake Slack on a free loopback port."""
    fake = FakeSlack(**options)
    runner = web.AppRunner(fake.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        fake.url = f"http://{host}:{port}"
        yield fake
    finally:
        for socket in fake.sockets:
            await socket.close()
        await runner.cleanup()
    fake.assert_no_secrets()
