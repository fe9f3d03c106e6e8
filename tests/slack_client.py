"""Test side of Slack event delivery: the adapter running in HTTP mode against the fake
Web API, and signed deliveries (events, slash commands, button clicks) POSTed to it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from adapters.slack import SlackPlatform, load_platform
from tests.slack_fake import (
    BOT_TOKEN,
    SIGNING_SECRET,
    TEAM,
    FakeSlack,
    running_fake_slack,
)


class SlackDelivery:
    """Sends what Slack would send to the bridge's /slack/events, signed."""

    def __init__(self, fake: FakeSlack, platform: SlackPlatform, session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.platform = platform
        self.session = session
        self._ids = itertools.count(1)
        self._ts = itertools.count(1)

    def new_ts(self) -> str:
        return f"1690000000.{next(self._ts):06d}"

    async def post(self, body: bytes, content_type: str, *, secret: str | None = SIGNING_SECRET, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        all_headers = {"Content-Type": content_type, **(headers or {})}
        if secret is not None:
            all_headers.update(self.fake.signed_headers(body, secret=secret))
        assert self.platform.url
        async with self.session.post(self.platform.url, data=body, headers=all_headers) as response:
            await response.read()
            return response

    async def event(self, event: dict[str, Any], *, event_id: str | None = None, retry: int | None = None, secret: str | None = SIGNING_SECRET) -> tuple[int, str]:
        """Deliver one Events API callback; returns (HTTP status, event id)."""
        event_id = event_id or f"Ev{next(self._ids):08d}"
        envelope = {
            "token": "verification-token-unused",
            "team_id": TEAM,
            "api_app_id": "A0001",
            "event": {"event_ts": event.get("ts", "1"), **event},
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
        }
        headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"} if retry else None
        response = await self.post(json.dumps(envelope).encode(), "application/json", secret=secret, headers=headers)
        return response.status, event_id

    async def mention(self, text: str, *, channel: str = "C0001", user: str = "UUSER", thread_ts: str | None = None, **kw: Any) -> tuple[str, str]:
        """An @mention; returns (the mention's ts, the reply thread's ts)."""
        ts = self.new_ts()
        event = {"type": "app_mention", "user": user, "text": f"<@UBOT0001> {text}", "ts": ts, "channel": channel}
        if thread_ts:
            event["thread_ts"] = thread_ts
        status, _ = await self.event(event, **kw)
        assert status == 200
        return ts, thread_ts or ts

    async def message(self, text: str, *, channel: str, channel_type: str, user: str | None = "UUSER", thread_ts: str | None = None, **fields: Any) -> str:
        ts = self.new_ts()
        event = {"type": "message", "text": text, "ts": ts, "channel": channel, "channel_type": channel_type, **fields}
        if user:
            event["user"] = user
        if thread_ts:
            event["thread_ts"] = thread_ts
        status, _ = await self.event(event)
        assert status == 200
        return ts

    async def command(self, text: str, *, user: str, channel: str = "C0001", command: str = "/agent") -> int:
        form = {
            "token": "unused",
            "team_id": TEAM,
            "channel_id": channel,
            "user_id": user,
            "command": command,
            "text": text,
            "response_url": self.fake.response_url(),
            "trigger_id": "1.2.3",
        }
        response = await self.post(urlencode(form).encode(), "application/x-www-form-urlencoded")
        return response.status

    async def click_stop(self, *, channel: str, message_ts: str, thread_ts: str, user: str = "UUSER") -> int:
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM},
            "user": {"id": user, "team_id": TEAM},
            "api_app_id": "A0001",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "channel": {"id": channel},
            "message": {"ts": message_ts, "thread_ts": thread_ts, "bot_id": "BBOT0001", "text": ""},
            "trigger_id": "1.2.3",
            "response_url": self.fake.response_url(),
            "actions": [{"action_id": "agent_bridge_stop", "block_id": "b", "type": "button", "value": "stop"}],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        response = await self.post(body, "application/x-www-form-urlencoded")
        return response.status


@contextlib.asynccontextmanager
async def running_slack(bridge, fake: FakeSlack, **overrides: Any) -> AsyncIterator[SlackDelivery]:
    """The Slack platform's real `run()` in HTTP mode against the fake, serving on the core's HTTP
    server at the bridge's BRIDGE_HTTP_HOST/PORT (the test settings: loopback, a free port).

    The adapter's declared rates are scaled exactly as the fake's window is (SLACK_RATE_SCALE)."""
    options: dict[str, Any] = {
        "slack_rate_scale": fake.time_scale,
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_app_token": None,
        "slack_api_url": fake.api_url,
        "slack_admin_users": "",
    }
    options.update(overrides)
    platform = load_platform(**options)
    assert platform is not None
    stop = asyncio.Event()
    task = asyncio.create_task(platform.run(bridge, stop))
    ready = asyncio.create_task(platform.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED, timeout=10)
    if task.done():
        task.result()
    assert platform.ready.is_set()
    try:
        async with aiohttp.ClientSession() as session:
            yield SlackDelivery(fake, platform, session)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def settled(delivery: SlackDelivery, timeout: float = 20.0) -> None:
    """Wait until every reply the adapter started has finished."""
    events = delivery.platform.events
    assert events is not None
    async with asyncio.timeout(timeout):
        # bolt starts a listener just after its ack, and a busy machine may take a while to get
        # there: settled means no reply task for three checks in a row (0.15 s)
        quiet = 0
        while quiet < 3:
            await asyncio.sleep(0.05)
            if events.tasks:
                quiet = 0
                await asyncio.gather(*list(events.tasks), return_exceptions=True)
            else:
                quiet += 1


QUICK = 4
"""Most Slack tests run the fake's rate window (and the adapter's declared rates) 4x faster;
the tests marked "real limits" use Slack's own figures."""


@pytest.fixture
async def fake():
    async with running_fake_slack(time_scale=QUICK) as running:
        yield running


@pytest.fixture
async def real_fake():
    async with running_fake_slack() as running:
        yield running
