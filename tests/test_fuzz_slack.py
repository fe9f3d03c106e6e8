"""Fuzzing the Slack adapter's real HTTP endpoint with hostile, correctly signed payloads:
events, slash commands and button clicks. Nothing may answer 5xx, raise out of a listener, or
break the event loop; the bridge keeps answering a normal mention afterwards."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.app import open_bridge
from bridge.mock_agent import running_mock_agent
from tests.conftest import bridge_settings
from tests.loop_thread import LoopThread
from tests.slack_client import running_slack
from tests.slack_fake import running_fake_slack

scalars = st.none() | st.booleans() | st.integers(-5, 10**12) | st.text(max_size=30) | st.floats(allow_nan=False)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=6)
event_keys = st.sampled_from(
    ["type", "subtype", "user", "bot_id", "text", "ts", "thread_ts", "channel", "channel_type", "team", "event_ts", "message", "blocks"]
)
plausible = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["app_mention", "message", "reaction_added", "app_home_opened", ""]),
        "channel": st.sampled_from(["C0001", "D0001", "", "CNOPE"]) | values,
        "ts": st.sampled_from(["1690000000.000100", "", "x"]) | values,
        "text": st.text(max_size=60) | values,
    },
    optional={
        "user": st.sampled_from(["UUSER", "UBOT0001", ""]) | values,
        "subtype": st.sampled_from(["bot_message", "message_changed", "message_deleted", "thread_broadcast"]) | values,
        "thread_ts": st.sampled_from(["1690000000.000100"]) | values,
        "channel_type": st.sampled_from(["im", "channel", "group"]) | values,
        "bot_id": st.sampled_from(["BOTHER", "BBOT0001"]) | values,
    },
)
events = plausible | st.dictionaries(event_keys, values, max_size=6)
envelopes = st.fixed_dictionaries(
    {"type": st.sampled_from(["event_callback", "url_verification", "app_rate_limited", "nope"]), "event": events},
    optional={"team_id": st.sampled_from(["T0001", ""]) | values, "event_id": st.text(max_size=12) | values, "challenge": values},
)
commands = st.fixed_dictionaries(
    {
        "command": st.sampled_from(["/agent", "/other", ""]),
        "text": st.text(max_size=80) | st.sampled_from(["bind", "bind not-an-id", "unbind", "status", "reset", "help", "bind a1b2c3d4-e5f6-7890-abcd-ef1234567890 allow_bots=maybe"]),
        "user_id": st.sampled_from(["UUSER", "UADMIN", ""]),
        "channel_id": st.sampled_from(["C0001", "D0001", ""]),
        "team_id": st.sampled_from(["T0001", ""]),
    },
    optional={"response_url": st.text(max_size=20), "trigger_id": st.text(max_size=8)},
)
actions = st.fixed_dictionaries(
    {"type": st.sampled_from(["block_actions", "view_submission", "shortcut", ""]), "actions": st.lists(st.dictionaries(st.sampled_from(["action_id", "value", "block_id"]), values, max_size=3), max_size=2)},
    optional={"container": values, "channel": values, "message": values, "user": values, "team": values},
)


@contextlib.asynccontextmanager
async def slack_world(tmp_path) -> AsyncIterator[SimpleNamespace]:
    async with running_mock_agent() as agent_url, running_fake_slack() as fake:
        settings = bridge_settings(
            agent_url, tmp_path / "fuzz.db", bridge_user_rate_limit="off", bridge_channel_rate_limit="off"
        )
        async with open_bridge(settings) as bridge, running_slack(bridge, fake) as slack:
            yield SimpleNamespace(fake=fake, slack=slack, url=slack.platform.url, server_errors=[])


def post(world: LoopThread, body: bytes, content_type: str) -> int:
    """A correctly signed request to the adapter's real endpoint; 5xx bodies are kept for the report."""
    headers = {"Content-Type": content_type, **world.value.fake.signed_headers(body)}
    status = httpx.post(world.value.url, content=body, headers=headers, timeout=10).status_code
    if status >= 500:
        world.value.server_errors.append(body[:300])
    return status


@pytest.fixture
def slack_thread(tmp_path) -> Iterator[LoopThread]:
    with LoopThread(lambda: slack_world(tmp_path)) as running:
        yield running


FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def test_hostile_payloads_never_break_the_adapter(slack_thread, caplog):
    caplog.set_level(logging.WARNING)
    statuses: list[int] = []

    @FUZZ
    @given(envelope=envelopes)
    def events_api(envelope):
        statuses.append(post(slack_thread, json.dumps(envelope, default=str).encode(), "application/json"))

    @FUZZ
    @given(form=commands)
    def slash_commands(form):
        statuses.append(post(slack_thread, urlencode(form).encode(), "application/x-www-form-urlencoded"))

    @FUZZ
    @given(payload=actions)
    def interactions(payload):
        body = urlencode({"payload": json.dumps(payload, default=str)}).encode()
        statuses.append(post(slack_thread, body, "application/x-www-form-urlencoded"))

    @FUZZ
    @given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"]))
    def garbage(raw, content_type):
        statuses.append(post(slack_thread, raw, content_type))

    for fuzz in (events_api, slash_commands, interactions, garbage):
        fuzz()

    assert statuses and all(status < 500 for status in statuses), slack_thread.value.server_errors[:3]
    assert slack_thread.loop_errors == []
    crashes = [r for r in caplog.records if r.exc_info and r.name.startswith(("adapters", "bridge", "slack_bolt"))]
    assert not crashes, [f"{r.name}: {r.getMessage()}" for r in crashes[:3]]

    # Still healthy: a normal mention is answered.
    assert slack_thread.call(_mention_answered)


async def _mention_answered(world) -> bool:
    before = world.fake.count("chat.postMessage")
    await world.slack.mention("are you still there?", channel="C0002")
    await world.fake.wait_for(lambda: world.fake.count("chat.postMessage") > before, 20)
    return True
