"""The database failing under the relay: users get a clear sentence, visible answers stay visible."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import pytest

from bridge.agent import AgentClient
from bridge.config import load_settings
from bridge.keys import ThreadKey
from bridge.relay import DATABASE_DOWN_TEXT, Inbound, Relay
from bridge.reply import ReplyStatus
from bridge.store import Store
from tests.conftest import SENTIENTONE_AGENT
from tests.recording import RecordingSurface

THREAD = ThreadKey("recording", "W1", "C1", "t1")


@pytest.fixture
async def parts(tmp_path, mock_agent_url):
    path = tmp_path / "locked.db"
    settings = load_settings(
        agent_api_url=mock_agent_url,
        agent_api_key="sk-so-test",
        agent_default_id=SENTIENTONE_AGENT,
        bridge_database_url=f"sqlite+aiosqlite:///{path}",
    )
    store = await Store.open(settings.bridge_database_url, sqlite_busy_timeout=0.2)
    agent = AgentClient(settings)
    yield path, store, Relay(store, agent, settings)
    await agent.aclose()
    await store.close()


@contextlib.asynccontextmanager
async def write_locked(path):
    """Another process-like connection holds SQLite's write lock."""
    conn = await asyncio.to_thread(sqlite3.connect, path, check_same_thread=False)
    await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        await asyncio.to_thread(conn.rollback)
        await asyncio.to_thread(conn.close)


async def test_database_down_before_the_answer_gets_a_clear_sentence(parts):
    path, store, relay = parts
    surface = RecordingSurface()
    async with write_locked(path):
        outcome = await relay.handle(Inbound(THREAD, "U1", "hello", "ev-1"), surface)
    assert outcome.reply_id is None
    assert surface.messages[outcome.messages[0].id].text == DATABASE_DOWN_TEXT
    again = await relay.handle(Inbound(THREAD, "U1", "hello", "ev-2"), surface)
    assert again.ok  # the lock is gone: business as usual


async def test_database_down_mid_answer_keeps_the_answer(parts, caplog):
    path, store, relay = parts
    surface = RecordingSurface()
    task = asyncio.create_task(relay.handle(Inbound(THREAD, "U1", "tell me a story", None), surface))
    await surface.wait_for(surface.posted)
    async with write_locked(path):
        outcome = await task
    assert outcome.reply.status is ReplyStatus.DONE and outcome.reply.text
    assert surface.messages[outcome.messages[-1].id].text == outcome.reply.text
    assert "could not persist reply" in caplog.text


async def test_an_exhausted_connection_pool_is_store_unavailable(tmp_path):
    """Every pooled connection busy past the pool's timeout (seen at 1,000 concurrent replies)
    counts as the database being unavailable, so the relay answers instead of raising."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from bridge.store import StoreUnavailable

    url = f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}"
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    store = Store(engine, make_url(url))
    try:
        async with engine.connect():  # the only connection, held
            with pytest.raises(StoreUnavailable, match="BRIDGE_DATABASE_URL"):
                await store.get_binding("slack", "T1", "C1")
    finally:
        await engine.dispose()
