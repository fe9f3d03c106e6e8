"""The real `agent-bridge run` process against local fakes: SIGKILL mid-stream then restart,
and SIGTERM with a grace period. Nothing stored may be lost; no reply may stay "working"."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import aiohttp
import pytest

from bridge.keys import ThreadKey
from bridge.store import Store
from tests.conftest import SENTIENTONE_AGENT
from tests.processes import (
    INTERRUPTED,
    BridgeProcess,
    checkpointed,
    free_port,
    lifecycle_env,
    reply_of,
    shows,
)
from tests.slack_client import SlackDelivery
from tests.slack_fake import TEAM, running_fake_slack


@pytest.fixture
async def world(tmp_path, mock_agent_url):
    port = free_port()
    db = tmp_path / "bridge.db"
    async with running_fake_slack() as fake:
        env = lifecycle_env(fake, mock_agent_url, f"sqlite+aiosqlite:///{db}")
        env.update(BRIDGE_HTTP_PORT=str(port), BRIDGE_LEASE_SECONDS="2")
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/slack/events"
            delivery = SlackDelivery(fake, SimpleNamespace(url=url), session)
            yield SimpleNamespace(fake=fake, env=env, port=port, db=db, delivery=delivery, tmp=tmp_path)


async def test_sigkill_mid_stream_then_restart_finalizes_every_reply(world):
    async with await Store.open(world.env["BRIDGE_DATABASE_URL"]) as store:
        await store.bind("slack", TEAM, "C0002", SENTIENTONE_AGENT, actor="UADMIN")
    first = BridgeProcess(world.env, world.port, world.tmp / "first.log")
    await first.start()
    threads = []
    for i, channel in enumerate(["C0001", "C0001", "C0002"]):
        _, thread_ts = await world.delivery.mention(f"tell me a slow and long story number {i}", channel=channel)
        threads.append((channel, thread_ts))
    await world.fake.wait_for(  # every reply shows some of the agent's text (not just the placeholder)
        lambda: all((m := reply_of(world.fake, c, t)) is not None and "You said" in m.text for c, t in threads), 30
    )
    await checkpointed(world.env["BRIDGE_DATABASE_URL"], count=3)
    assert await first.signal(signal.SIGKILL) == -signal.SIGKILL

    async with await Store.open(world.env["BRIDGE_DATABASE_URL"]) as store:
        left = await store.unfinished_replies()
        everything = await store.recent_replies(ThreadKey("slack", TEAM, "C0001", ""), 10, whole_channel=True)
        assert len(left) == 3, (everything, (world.tmp / "first.log").read_text())  # the crash left them streaming
        assert {r.key.thread for r in left} == {t for _, t in threads}

    second = BridgeProcess(world.env, world.port, world.tmp / "second.log")
    await second.start()
    await world.fake.wait_for(lambda: all(shows(reply_of(world.fake, c, t), INTERRUPTED) for c, t in threads), 30)
    for channel, thread_ts in threads:
        message = reply_of(world.fake, channel, thread_ts)
        assert "You said" in message.text  # the text shown before the crash stays
        assert not shows(message, "agent_bridge_stop")  # no Stop button, no working indicator left
    assert await second.signal(signal.SIGTERM) == 0

    async with await Store.open(world.env["BRIDGE_DATABASE_URL"]) as store:
        assert await store.unfinished_replies() == []
        for channel, thread_ts in threads:
            conversation = await store.get_conversation(ThreadKey("slack", TEAM, channel, thread_ts))
            assert conversation is not None and conversation.conversation_id
            (record,) = await store.recent_replies(ThreadKey("slack", TEAM, channel, thread_ts), 5)
            assert record.status == "interrupted"
        assert (await store.get_binding("slack", TEAM, "C0002")).agent_id == SENTIENTONE_AGENT
    assert "Traceback" not in (world.tmp / "second.log").read_text()


async def test_sigterm_finishes_within_grace_then_interrupts_the_rest(world):
    env = {**world.env, "BRIDGE_SHUTDOWN_GRACE": "1.5"}
    bridge = BridgeProcess(env, world.port, world.tmp / "term.log")
    await bridge.start()
    _, quick = await world.delivery.mention("hello there")
    _, slow = await world.delivery.mention("tell me a slow and long story", channel="C0002")
    await world.fake.wait_for(lambda: (m := reply_of(world.fake, "C0002", slow)) is not None and "You said" in m.text, 20)
    assert await bridge.signal(signal.SIGTERM) == 0

    finished = reply_of(world.fake, "C0001", quick)
    assert finished.text and not shows(finished, INTERRUPTED) and not shows(finished, "agent_bridge_stop")
    cut = reply_of(world.fake, "C0002", slow)
    assert shows(cut, INTERRUPTED) and not shows(cut, "agent_bridge_stop")
    async with await Store.open(world.env["BRIDGE_DATABASE_URL"]) as store:
        statuses = {
            thread: (await store.recent_replies(ThreadKey("slack", TEAM, channel, thread), 1))[0].status
            for channel, thread in (("C0001", quick), ("C0002", slow))
        }
    assert statuses == {quick: "done", slow: "interrupted"}
