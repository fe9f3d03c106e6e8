"""`agent-bridge run` shutdown with Slack: the core drains while Slack is still connected, so
an interrupted reply says so in Slack, and the platform then stops cleanly."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from adapters.slack import load_platform
from bridge.keys import ThreadKey
from bridge.platforms import run_platforms
from bridge.relay import INTERRUPTED_NOTICE
from tests.slack_client import SlackDelivery
from tests.slack_fake import BOT_TOKEN, SIGNING_SECRET, running_fake_slack


async def test_shutdown_interrupts_a_streaming_reply_visibly_then_stops(bridge_factory):
    async with bridge_factory(bridge_shutdown_grace=0.3) as bridge, running_fake_slack(time_scale=4) as fake:
        platform = load_platform(
            slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET, slack_app_token="",
            slack_api_url=fake.api_url, slack_rate_scale=4,
        )
        shutdown = asyncio.Event()
        running = asyncio.create_task(run_platforms(bridge, [platform], shutdown))
        await asyncio.wait_for(platform.ready.wait(), 10)
        async with aiohttp.ClientSession() as session:
            slack = SlackDelivery(fake, platform, session)
            _, thread_ts = await slack.mention("be slow please")
            (reply,) = await fake.wait_for(lambda: fake.thread_messages("C0001", thread_ts))
            await fake.wait_for(lambda: reply.text)
            shutdown.set()
            await asyncio.wait_for(running, 15)
        assert not platform.ready.is_set()
        assert INTERRUPTED_NOTICE in "\n".join(a.get("text", "") for a in reply.attachments)
        assert not any("blocks" in a for a in reply.attachments)  # no Stop button left behind
        (record,) = await bridge.store.recent_replies(ThreadKey("slack", "T0001", "C0001", thread_ts))
        assert record.status == "interrupted"
        # The endpoint is gone.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.post(platform.url, data=b"{}"):
                    pass
