"""Socket Mode: the same adapter connected over a WebSocket to the fake Slack, with retried
envelopes answered once, and the deployment manifest checked against what the adapter uses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import yaml

from adapters.slack import load_platform
from tests.slack_fake import APP_TOKEN, BOT_TOKEN, TEAM, running_fake_slack

MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "slack" / "manifest.yml"


async def test_socket_mode_answers_once_and_acks_every_envelope(bridge):
    async with running_fake_slack() as fake:
        platform = load_platform(
            slack_bot_token=BOT_TOKEN, slack_app_token=APP_TOKEN, slack_signing_secret="", slack_api_url=fake.api_url
        )
        assert platform is not None and platform.settings.socket_mode
        stop = asyncio.Event()
        task = asyncio.create_task(platform.run(bridge, stop))
        try:
            await asyncio.wait_for(platform.ready.wait(), 10)
            event = {"type": "app_mention", "user": "UUSER", "text": "<@UBOT0001> over the socket", "ts": "1690000000.000009", "channel": "C0001"}
            payload = {"team_id": TEAM, "api_app_id": "A0001", "event": event, "type": "event_callback", "event_id": "EvSock1", "event_time": int(time.time())}
            await fake.send_envelope("events_api", payload, "env-1")
            await fake.send_envelope("events_api", payload, "env-2", retry_attempt=1)  # Slack's redelivery
            await fake.wait_for(lambda: {"env-1", "env-2"} <= set(fake.acks))
            await fake.wait_for(lambda: (m := fake.thread_messages("C0001", event["ts"])) and not any("blocks" in a for a in m[0].attachments))
            await asyncio.sleep(0.3)
            (reply,) = fake.thread_messages("C0001", event["ts"])
            assert "over the socket" in reply.text
            assert fake.count("chat.postMessage") == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


def test_manifest_matches_what_the_adapter_uses():
    manifest = yaml.safe_load(MANIFEST.read_text())
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert events == {"app_mention", "message.channels", "message.groups", "message.im", "assistant_thread_started", "assistant_thread_context_changed"}
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    # Each event and Web API method the adapter uses needs its scope, and nothing more is asked.
    assert scopes == {"app_mentions:read", "channels:history", "groups:history", "im:history", "chat:write", "commands", "users:read", "assistant:write"}
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/agent" and command["url"].endswith("/slack/events")
    assert manifest["settings"]["interactivity"]["is_enabled"]  # the Stop button
    assert "assistant_view" in manifest["features"]  # required for assistant:write
