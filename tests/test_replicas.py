"""Several replicas on one database (SQLite file and Postgres): each test opens two or more
real bridges — own store connections, agent client and relay — against one database and the
mock agent, as separate `agent-bridge run` processes would. The process-level version (three
real processes, SIGKILL) is in `test_replicas_processes.py`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.app import Bridge, open_bridge
from bridge.keys import ThreadKey
from bridge.relay import INTERRUPTED_NOTICE, Inbound
from bridge.reply import Reply, ReplyStatus, reply_to_json
from bridge.store import Store
from tests.conftest import bridge_settings
from tests.db_fixtures import db_url, pg_database_url  # noqa: F401
from tests.recording import RecordingSurface

SLOW = "tell me a slow story"
SLOW_LONG = "tell me a slow and long story"


def thread(name: str = "t1") -> ThreadKey:
    return ThreadKey("recording", "W1", "C1", name)


@contextlib.asynccontextmanager
async def replicas(agent_url: str, url: str, tmp_path, count: int = 2, **overrides: Any) -> AsyncIterator[list[Bridge]]:
    settings = bridge_settings(agent_url, tmp_path / "unused.db", bridge_database_url=url, **overrides)
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_bridge(settings)) for _ in range(count)]


async def test_replicas_have_distinct_owners(mock_agent_url, db_url, tmp_path):
    async with replicas(mock_agent_url, db_url, tmp_path) as (a, b):
        assert a.relay.owner != b.relay.owner


async def test_a_retry_delivered_to_another_replica_is_answered_once(mock_agent_url, db_url, tmp_path):
    async with replicas(mock_agent_url, db_url, tmp_path, count=3) as bridges:
        surface = RecordingSurface()
        inbound = Inbound(thread(), "U1", "hello", "Ev1")
        outcomes = await asyncio.gather(*(b.relay.handle(inbound, surface) for b in bridges))
    assert sum(o.ok for o in outcomes) == 1
    assert sum(o.duplicate for o in outcomes) == 2
    assert len(surface.ops("post")) == 1


async def test_concurrent_enqueues_on_two_replicas_get_distinct_places(db_url):
    """The thread queue is exact under concurrency: n replies enqueued at once from two
    connections see 0, 1, …, n-1 replies ahead of them (on Postgres this needs the advisory
    lock; without it two inserts would both see the other's row as uncommitted)."""
    async with await Store.open(db_url) as one, await Store.open(db_url, migrate=False) as two:
        until = datetime.now(UTC) + timedelta(seconds=30)
        queued = await asyncio.gather(
            *((one if i % 2 else two).enqueue_reply(thread(), owner=f"r{i % 2}", lease_until=until) for i in range(20))
        )
    by_id = sorted(queued, key=lambda q: q.id)
    assert [q.earlier for q in by_id] == list(range(20))


async def test_messages_of_one_thread_on_two_replicas_are_answered_in_order(mock_agent_url, db_url, tmp_path):
    async with replicas(mock_agent_url, db_url, tmp_path) as (a, b):
        surface = RecordingSurface()
        first = asyncio.create_task(a.relay.handle(Inbound(thread(), "U1", SLOW, "Ev1"), surface))
        await surface.wait_for(surface.shows_text)
        second = asyncio.create_task(b.relay.handle(Inbound(thread(), "U1", "hello after", "Ev2"), surface))
        other_thread = await b.relay.handle(Inbound(thread("t2"), "U1", "hello elsewhere", "Ev3"), surface)
        assert other_thread.ok and not first.done()  # only the same thread waits
        one, two = await first, await second
    assert one.ok and two.ok
    first_ids = {m.id for m in one.messages}
    last_of_first = max(i for i, c in enumerate(surface.calls) if c.message_id in first_ids)
    first_of_second = min(i for i, c in enumerate(surface.calls) if c.message_id == two.messages[0].id)
    assert last_of_first < first_of_second, "the second message was answered before the first finished"


async def test_a_dead_replicas_replies_are_finalized_and_its_queue_answered(mock_agent_url, db_url, tmp_path):
    """A replica died holding a streaming reply (with a checkpoint) and a queued message behind
    it in the same thread: after the lease, a survivor shows the first as interrupted, then
    answers the second fully — in that order."""
    async with replicas(mock_agent_url, db_url, tmp_path, count=1) as (survivor,):
        surface = RecordingSurface()
        store = survivor.store
        gone = datetime.now(UTC) - timedelta(seconds=1)
        streaming = await store.enqueue_reply(thread(), owner="dead:1:x", lease_until=gone)
        assert await store.start_reply(streaming.id, survivor.settings.agent_default_id, "dead:1:x")
        placeholder = await surface.post(thread(), "…")
        await store.add_reply_message(streaming.id, placeholder.id)
        await store.checkpoint_reply(streaming.id, reply_to_json(Reply(text="Half an answer")))
        queued = await store.enqueue_reply(
            thread(), owner="dead:1:x", lease_until=gone, inbound={"user": "U1", "text": "hello again"}
        )
        alive = await store.enqueue_reply(
            thread("busy"), owner="alive:2:y", lease_until=datetime.now(UTC) + timedelta(seconds=60)
        )

        assert await survivor.relay.recover("recording", lambda key: surface) == 2
        await surface.wait_for(lambda: len(surface.ops("post")) >= 2)
        await asyncio.gather(*survivor.relay._adopted)

        assert surface.messages[placeholder.id].text == "Half an answer"
        assert surface.messages[placeholder.id].reply.notice == INTERRUPTED_NOTICE
        answered = await store.get_reply(queued.id)
        assert answered.status is ReplyStatus.DONE and answered.owner == survivor.relay.owner
        assert "hello again" in surface.messages[answered.message_ids[0]].text
        interrupted_at = max(i for i, c in enumerate(surface.calls) if c.message_id == placeholder.id)
        answer_at = min(i for i, c in enumerate(surface.calls) if c.message_id == answered.message_ids[0])
        assert interrupted_at < answer_at
        assert (await store.get_reply(streaming.id)).status is ReplyStatus.INTERRUPTED
        assert (await store.get_reply(alive.id)).status is ReplyStatus.QUEUED  # its lease is alive: left alone


async def test_leases_are_renewed_while_a_reply_streams(mock_agent_url, db_url, tmp_path):
    async with replicas(mock_agent_url, db_url, tmp_path, count=1, bridge_lease_seconds=1.5) as (a,):
        surface = RecordingSurface()
        task = asyncio.create_task(a.relay.handle(Inbound(thread(), "U1", SLOW, None), surface))
        await surface.wait_for(surface.shows_text)
        (row,) = await a.store.unfinished_replies()
        first_lease = row.lease_until
        await asyncio.sleep(1.2)
        (row,) = await a.store.unfinished_replies()
        assert row.lease_until > first_lease and row.owner == a.relay.owner
        assert (await task).ok


async def test_a_reply_taken_over_elsewhere_is_left_to_the_new_owner(mock_agent_url, db_url, tmp_path):
    """A replica that lost its lease (it stalled, another took the reply over) stops streaming
    and does not write the reply's end: the new owner finalizes it."""
    async with replicas(mock_agent_url, db_url, tmp_path, count=1, bridge_lease_seconds=1.5) as (a,):
        surface = RecordingSurface()
        task = asyncio.create_task(a.relay.handle(Inbound(thread(), "U1", SLOW, None), surface))
        await surface.wait_for(surface.shows_text)
        (row,) = await a.store.unfinished_replies()
        await a.store.update_reply(row.id, owner="other:9:z")
        outcome = await asyncio.wait_for(task, 5)
        assert outcome.handed_over and outcome.reply is None
        record = await a.store.get_reply(row.id)
        assert record.status is ReplyStatus.STREAMING and record.owner == "other:9:z"


async def test_stop_pressed_on_another_replica_stops_the_reply(mock_agent_url, db_url, tmp_path):
    async with replicas(mock_agent_url, db_url, tmp_path) as (a, b):
        surface = RecordingSurface()
        task = asyncio.create_task(a.relay.handle(Inbound(thread(), "U1", SLOW_LONG, None), surface))
        await surface.wait_for(surface.shows_text)
        assert await b.relay.stop_thread(thread())
        outcome = await asyncio.wait_for(task, 10)
    assert outcome.reply.status is ReplyStatus.STOPPED


async def test_shutdown_hands_queued_messages_to_another_replica(mock_agent_url, db_url, tmp_path):
    async with replicas(mock_agent_url, db_url, tmp_path) as (a, b):
        surface = RecordingSurface()
        first = asyncio.create_task(a.relay.handle(Inbound(thread(), "U1", SLOW, "Ev1"), surface))
        await surface.wait_for(surface.shows_text)
        second = asyncio.create_task(a.relay.handle(Inbound(thread(), "U1", "hello later", "Ev2"), surface))
        await surface.wait_for(lambda: a.relay._waiting)
        await a.relay.drain(grace=0.3)
        assert (await second).handed_over
        assert (await first).reply.status is ReplyStatus.INTERRUPTED
        assert await b.relay.recover("recording", lambda key: surface) == 1
        (adopted,) = b.relay._adopted
        outcome = await adopted
    assert outcome.ok and "hello later" in outcome.reply.text
