"""Three real `agent-bridge run` processes (Slack HTTP mode) on this machine's Postgres, the
fake Slack and the mock agent: signed events spread over them (retries of one event to
different replicas, two messages of one thread to two replicas), then one replica is killed
with SIGKILL mid-stream. Nothing may be answered twice, out of order, or lost."""

from __future__ import annotations

import asyncio
import itertools
import signal
from types import SimpleNamespace

import aiohttp
import pytest

from bridge.keys import ThreadKey
from bridge.reply import ReplyStatus
from bridge.store import Store
from tests.conftest import SENTIENTONE_AGENT
from tests.db_fixtures import empty_postgres, pg_database_url  # noqa: F401
from tests.processes import (
    BridgeProcess,
    checkpointed,
    free_port,
    lifecycle_env,
    reply_of,
    shows,
)
from tests.slack_client import SlackDelivery
from tests.slack_fake import TEAM, running_fake_slack

SCALE = 4
"""The fake's rate window and the replicas' declared Slack rates, sped up alike."""
LEASE = 2


@pytest.fixture
async def cluster(tmp_path, mock_agent_url, pg_database_url):  # noqa: F811
    empty_postgres(pg_database_url)
    async with running_fake_slack(time_scale=SCALE) as fake:
        env = lifecycle_env(fake, mock_agent_url, pg_database_url)
        env.update(BRIDGE_LEASE_SECONDS=str(LEASE), SLACK_RATE_SCALE=str(SCALE))
        ports = [free_port() for _ in range(3)]
        replicas = [
            BridgeProcess({**env, "BRIDGE_HTTP_PORT": str(port)}, port, tmp_path / f"replica{i}.log")
            for i, port in enumerate(ports)
        ]
        async with await Store.open(pg_database_url) as store:  # migrated once before the replicas start
            await store.bind("slack", TEAM, "C0002", SENTIENTONE_AGENT, actor="UADMIN")
        await asyncio.gather(*(r.start() for r in replicas))
        try:
            async with aiohttp.ClientSession() as session:
                ts, ids = itertools.count(1), itertools.count(1)
                deliveries = []
                for port in ports:
                    delivery = SlackDelivery(fake, SimpleNamespace(url=f"http://127.0.0.1:{port}/slack/events"), session)
                    delivery._ts, delivery._ids = ts, ids  # one Slack: timestamps and event ids never repeat
                    deliveries.append(delivery)
                yield SimpleNamespace(fake=fake, url=pg_database_url, replicas=replicas, to=deliveries, tmp=tmp_path)
        finally:
            for replica in replicas:
                if replica.proc is not None and replica.proc.returncode is None:
                    replica.proc.kill()
                    await replica.proc.wait()


def bot_messages(fake, channel: str, thread_ts: str):
    return [m for m in fake.thread_messages(channel, thread_ts) if m.ts != thread_ts]


async def test_three_replicas_one_killed_nothing_twice_out_of_order_or_lost(cluster):
    fake, to = cluster.fake, cluster.to
    # Replica 0 will die: it gets two long answers and a follow-up queued behind one of them.
    _, long1 = await to[0].mention("tell me a slow and long story", event_id="EvLong1")
    _, long2 = await to[0].mention("tell me a slow and long story too", channel="C0002")
    await fake.wait_for(
        lambda: all((m := reply_of(fake, c, t)) is not None and "You said" in m.text for c, t in
                    (("C0001", long1), ("C0002", long2))), 30
    )
    for retry, replica in ((1, 1), (2, 2)):  # Slack retrying the same event at other replicas
        status, _ = await to[replica].event(
            {"type": "app_mention", "user": "UUSER", "text": "<@UBOT0001> tell me a slow and long story",
             "ts": long1, "channel": "C0001"},
            event_id="EvLong1", retry=retry,
        )
        assert status == 200
    await to[0].mention("and a follow-up", thread_ts=long1)  # queued behind long1, on replica 0

    # Two messages of one thread reach two different live replicas.
    _, ordered = await to[1].mention("tell me a slow story")
    await fake.wait_for(lambda: reply_of(fake, "C0001", ordered) is not None, 15)
    await to[2].mention("second in line", thread_ts=ordered)

    await checkpointed(cluster.url, count=2)
    assert await cluster.replicas[0].signal(signal.SIGKILL) == -signal.SIGKILL
    killed_at = len(fake.calls)

    def settled() -> bool:
        first, second = bot_messages(fake, "C0001", long1)[:1], bot_messages(fake, "C0002", long2)[:1]
        follow_up = [m for m in bot_messages(fake, "C0001", long1) if "and a follow-up" in m.text]
        return bool(
            first and shows(first[0], "interrupted") and second and shows(second[0], "interrupted")
            and follow_up and "You said" in follow_up[0].text and len(bot_messages(fake, "C0001", ordered)) >= 2
        )

    await fake.wait_for(settled, 45)
    async with await Store.open(cluster.url) as store:
        for _ in range(100):  # the survivors finish their bookkeeping just after the last edit
            if not await store.unfinished_replies():
                break
            await asyncio.sleep(0.1)
        assert await store.unfinished_replies() == []
        rows = {
            thread: await store.recent_replies(ThreadKey("slack", TEAM, channel, thread), 10)
            for channel, thread in (("C0001", long1), ("C0002", long2), ("C0001", ordered))
        }
        by_age = {thread: sorted(records, key=lambda r: r.id) for thread, records in rows.items()}
        # one reply per event: the two retries of EvLong1 were not answered again
        assert [r.status for r in by_age[long1]] == [ReplyStatus.INTERRUPTED, ReplyStatus.DONE]
        assert [r.status for r in by_age[long2]] == [ReplyStatus.INTERRUPTED]
        assert [r.status for r in by_age[ordered]] == [ReplyStatus.DONE, ReplyStatus.DONE]
        # nothing lost: binding and every thread's conversation are there
        assert (await store.get_binding("slack", TEAM, "C0002")).agent_id == SENTIENTONE_AGENT
        for channel, thread in (("C0001", long1), ("C0002", long2), ("C0001", ordered)):
            conversation = await store.get_conversation(ThreadKey("slack", TEAM, channel, thread))
            assert conversation is not None and conversation.conversation_id

    follow_up = next(m for m in bot_messages(fake, "C0001", long1) if "and a follow-up" in m.text)
    interrupted = bot_messages(fake, "C0001", long1)[0]
    assert float(follow_up.ts) > float(interrupted.ts)
    posts_in_long1 = [
        i for i, c in enumerate(fake.calls)
        if c.method == "chat.postMessage" and c.status == 200 and c.args.get("thread_ts") == long1
    ]
    assert len(posts_in_long1) == 2 and posts_in_long1[1] >= killed_at  # the follow-up: by a survivor, after the kill
    answers = bot_messages(fake, "C0001", ordered)
    assert "tell me a slow story" in answers[0].text and "second in line" in answers[1].text
    # thread order across replicas: the second answer was posted after the first one's last edit
    accepted = [c for c in fake.calls if c.status == 200]
    first_done = max(i for i, c in enumerate(accepted) if c.method == "chat.update" and c.args.get("ts") == answers[0].ts)
    posts = [i for i, c in enumerate(accepted) if c.method == "chat.postMessage" and c.args.get("thread_ts") == ordered]
    assert len(posts) == 2 and first_done < posts[1]

    for replica in cluster.replicas[1:]:
        assert await replica.signal(signal.SIGTERM) == 0
        assert "Traceback" not in replica.log.read_text()
