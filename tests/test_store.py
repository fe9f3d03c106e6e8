"""Store tests; each runs on a SQLite file and on Postgres (see tests/db_fixtures.py)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from bridge.events import Usage
from bridge.keys import ThreadKey
from bridge.reply import ReplyStatus
from bridge.store import ReplyNotFound, Store, StoreUnavailable
from bridge.store.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from bridge.store.models import metadata
from tests.db_fixtures import db_url, pg_database_url, skip_postgres, store  # noqa: F401

KEY = ThreadKey("slack", "T1", "C1", "1700000000.0001")
TABLES = {"bindings", "conversations", "replies", "processed_events", "audit_log"}


def _diff(conn: Connection) -> list[Any]:
    return compare_metadata(MigrationContext.configure(conn), metadata)


# -- migrations --------------------------------------------------------------------------


async def test_upgrade_twice_is_a_noop(db_url: str) -> None:
    await upgrade(db_url)
    await upgrade(db_url)
    async with await Store.open(db_url, migrate=False) as s:
        async with s.engine.connect() as conn:
            assert await current_revision(conn) == head_revision() == "0003"
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert TABLES <= names


async def test_models_match_migrations(db_url: str) -> None:
    async with await Store.open(db_url) as s:
        async with s.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []


async def test_plain_alembic_command_uses_the_url(db_url: str) -> None:
    """env.py without a passed connection (the `alembic` CLI path) builds its own engine."""
    await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
    async with await Store.open(db_url, migrate=False) as s:
        async with s.engine.connect() as conn:
            assert await current_revision(conn) == "0003"


async def test_open_without_migrate_leaves_schema_alone(db_url: str) -> None:
    async with await Store.open(db_url, migrate=False) as s:
        async with s.engine.connect() as conn:
            assert await current_revision(conn) is None


# -- bindings ----------------------------------------------------------------------------


async def test_bindings_crud_and_audit(store: Store) -> None:
    assert await store.get_binding("slack", "T1", "C1") is None
    b = await store.bind("slack", "T1", "C1", "agent-a", "U-admin", {"require_mention": True})
    assert (b.agent_id, b.bound_by, dict(b.options)) == ("agent-a", "U-admin", {"require_mention": True})
    assert b.bound_at.tzinfo is not None

    again = await store.bind("slack", "T1", "C1", "agent-b", "U-other")
    assert again.agent_id == "agent-b"
    assert dict(again.options) == {"require_mention": True}, "options=None keeps options"
    assert await store.get_binding("slack", "T1", "C1") == again

    await store.bind("discord", "G1", "D1", "agent-c", "U-admin", {"allow_bots": False})
    assert [x.channel for x in await store.list_bindings()] == ["D1", "C1"]
    assert [x.agent_id for x in await store.list_bindings("slack")] == ["agent-b"]

    assert await store.unbind("slack", "T1", "C1", "U-admin") is True
    assert await store.unbind("slack", "T1", "C1", "U-admin") is False
    assert await store.get_binding("slack", "T1", "C1") is None

    log = await store.recent_audit(platform="slack")
    assert [(e.action, e.actor) for e in log] == [
        ("binding.removed", "U-admin"),
        ("binding.set", "U-other"),
        ("binding.set", "U-admin"),
    ]
    assert log[1].detail["previous_agent_id"] == "agent-a"
    assert len(await store.recent_audit()) == 4
    assert len(await store.recent_audit(limit=2)) == 2


async def test_free_audit_entry(store: Store) -> None:
    await store.audit("slack", "T1", "C1", "U1", "status.viewed", {"n": [1, 2]})
    (entry,) = await store.recent_audit()
    assert (entry.action, dict(entry.detail)) == ("status.viewed", {"n": [1, 2]})
    assert entry.at.tzinfo is UTC


# -- conversations -----------------------------------------------------------------------


async def test_conversation_lifecycle(store: Store) -> None:
    assert await store.get_conversation(KEY) is None
    conv = await store.start_conversation(KEY, "agent-a")
    assert (conv.key, conv.agent_id, conv.conversation_id) == (KEY, "agent-a", None)

    assert await store.set_conversation_id(KEY, "conv-1") is True
    same = await store.start_conversation(KEY, "agent-b")
    assert (same.agent_id, same.conversation_id) == ("agent-a", "conv-1"), "a thread keeps its agent"

    other = ThreadKey("slack", "T1", "C1", "")
    assert (await store.start_conversation(other, "agent-b")).agent_id == "agent-b"

    assert await store.forget_conversation_id(KEY) is True
    forgotten = await store.get_conversation(KEY)
    assert forgotten is not None and forgotten.conversation_id is None
    assert forgotten.agent_id == "agent-a"

    await store.set_conversation_id(KEY, "conv-2")
    assert await store.reset_conversation(KEY, "U1") is True
    assert await store.get_conversation(KEY) is None
    assert await store.reset_conversation(KEY, "U1") is False
    assert await store.set_conversation_id(KEY, "late") is False, "a reset is not undone"
    assert (await store.get_conversation(other)) is not None

    (entry,) = await store.recent_audit()
    assert entry.action == "conversation.reset"
    assert dict(entry.detail) == {"thread": KEY.thread, "agent_id": "agent-a", "conversation_id": "conv-2"}

    fresh = await store.start_conversation(KEY, "agent-b")
    assert (fresh.agent_id, fresh.conversation_id) == ("agent-b", None)


async def test_concurrent_start_conversation_agrees(db_url: str) -> None:
    async with await Store.open(db_url) as a, await Store.open(db_url) as b:
        results = await asyncio.gather(
            *(
                (a if i % 2 else b).start_conversation(KEY, f"agent-{i}")
                for i in range(10)
            )
        )
    assert len({r.agent_id for r in results}) == 1


# -- replies -----------------------------------------------------------------------------


async def test_reply_lifecycle(store: Store) -> None:
    rid = await store.create_reply(KEY, "agent-a", inbound_event_id="Ev1", owner="proc-1")
    r = await store.get_reply(rid)
    assert (r.status, r.message_ids, r.owner, r.inbound_event_id) == (
        ReplyStatus.STREAMING, (), "proc-1", "Ev1",
    )
    assert r.finished_at is None and r.created_at.tzinfo is UTC

    await store.add_reply_message(rid, "111.1")
    await store.add_reply_message(rid, "111.2")
    await store.add_reply_message(rid, "111.1")
    await store.update_reply(rid, trace_id="tr-1", lease_until=datetime.now(UTC) + timedelta(seconds=30))
    r = await store.get_reply(rid)
    assert r.message_ids == ("111.1", "111.2")
    assert r.trace_id == "tr-1" and r.lease_until is not None and r.lease_until.tzinfo is UTC

    assert await store.finish_reply(
        rid, ReplyStatus.DONE, conversation_id="conv-1", usage=Usage(total_tokens=42)
    ) is True
    assert await store.finish_reply(rid, "failed", error_code="late") is False, "first finish wins"
    r = await store.get_reply(rid)
    assert (r.status, r.conversation_id, r.trace_id, r.error_code) == (
        ReplyStatus.DONE, "conv-1", "tr-1", None,
    )
    assert r.usage == Usage(total_tokens=42)
    assert r.finished_at is not None and r.finished_at >= r.created_at


async def test_reply_errors(store: Store) -> None:
    rid = await store.create_reply(KEY, "agent-a")
    with pytest.raises(ValueError):
        await store.finish_reply(rid, ReplyStatus.STREAMING)
    with pytest.raises(TypeError):
        await store.update_reply(rid, status="done")
    for call in (
        store.get_reply(9999),
        store.add_reply_message(9999, "x"),
        store.finish_reply(9999, "done"),
        store.update_reply(9999, trace_id="t"),
    ):
        with pytest.raises(ReplyNotFound):
            await call


async def test_unfinished_replies(store: Store) -> None:
    a = await store.create_reply(KEY, "agent-a", owner="proc-1")
    b = await store.create_reply(KEY, "agent-a", owner="proc-2")
    c = await store.create_reply(KEY, "agent-a", owner="proc-1")
    await store.finish_reply(c, ReplyStatus.STOPPED)
    assert [r.id for r in await store.unfinished_replies()] == [a, b]
    assert [r.id for r in await store.unfinished_replies("proc-1")] == [a]
    await store.finish_reply(a, ReplyStatus.INTERRUPTED)
    assert [r.id for r in await store.unfinished_replies()] == [b]


async def test_recent_replies_and_usage_summary(store: Store) -> None:
    other_thread = ThreadKey("slack", "T1", "C1", "other")
    r1 = await store.create_reply(KEY, "agent-a")
    await store.finish_reply(r1, "done", usage={"input_tokens": 10, "output_tokens": 5})
    r2 = await store.create_reply(KEY, "agent-a")
    await store.finish_reply(r2, "failed", error_code="upstream_timeout")
    r3 = await store.create_reply(other_thread, "agent-a")
    await store.finish_reply(r3, "done", usage=Usage(total_tokens=100, input_tokens=60, output_tokens=40))
    r4 = await store.create_reply(other_thread, "agent-a")
    await store.finish_reply(r4, "failed", error_code="rate_limited")
    await store.create_reply(ThreadKey("slack", "T1", "C2", "x"), "agent-a")

    assert [r.id for r in await store.recent_replies(KEY)] == [r2, r1]
    assert [r.id for r in await store.recent_replies(KEY, 3, whole_channel=True)] == [r4, r3, r2]

    s = await store.usage_summary("slack", "T1", "C1")
    assert s.replies == 4
    assert dict(s.by_status) == {ReplyStatus.DONE: 2, ReplyStatus.FAILED: 2}
    assert (s.total_tokens, s.input_tokens, s.output_tokens) == (115, 70, 45)
    assert s.last_error_codes == ("rate_limited", "upstream_timeout")
    assert s.last_reply_at is not None and s.last_reply_at.tzinfo is UTC

    later = await store.usage_summary("slack", "T1", "C1", since=datetime.now(UTC) + timedelta(hours=1))
    assert (later.replies, later.total_tokens, later.last_reply_at) == (0, 0, None)


# -- de-duplication ----------------------------------------------------------------------


async def test_claim_event_once_across_two_stores(db_url: str) -> None:
    async with await Store.open(db_url) as a, await Store.open(db_url) as b:
        results = await asyncio.gather(
            *((a if i % 2 else b).claim_event("slack", "Ev-dup") for i in range(20))
        )
        assert results.count(True) == 1
        assert await a.claim_event("discord", "Ev-dup") is True, "ids are per platform"
        assert await b.claim_event("slack", "Ev-other") is True


async def test_prune_events(db_url: str) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    async with await Store.open(db_url, clock=lambda: now[0]) as s:
        await s.claim_event("slack", "old")
        now[0] += timedelta(hours=2)
        await s.claim_event("slack", "new")
        assert await s.prune_events(timedelta(hours=1)) == 1
        assert await s.claim_event("slack", "old") is True, "pruned ids can be claimed again"
        assert await s.claim_event("slack", "new") is False


# -- engine set-up and failures ----------------------------------------------------------


async def test_sqlite_uses_wal_and_creates_parent_dir(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "bridge.db"
    async with await Store.open(f"sqlite+aiosqlite:///{path}") as s:
        async with s.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 5000
    assert path.exists()


async def test_sqlite_memory_store_works() -> None:
    async with await Store.open("sqlite+aiosqlite://") as s:
        results = await asyncio.gather(*(s.claim_event("slack", "e") for _ in range(5)))
        assert results.count(True) == 1


async def test_locked_sqlite_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="BRIDGE_DATABASE_URL.*locked"):
            await Store.open(f"sqlite+aiosqlite:///{path}", sqlite_busy_timeout=0.2)
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://bridge:hunter2pw@127.0.0.1:1/test",  # refused
        "postgresql+asyncpg://postgres:hunter2pw@127.0.0.1:5432/no_such_db_hunter2pw",
    ],
)
async def test_unavailable_message_hides_password(url: str) -> None:
    if "5432" in url and skip_postgres():
        pytest.skip("BRIDGE_SKIP_POSTGRES=1")
    with pytest.raises(StoreUnavailable) as info:
        await Store.open(url, connect_timeout=3)
    message = str(info.value)
    assert "BRIDGE_DATABASE_URL" in message and "***" in message
    assert "hunter2pw@" not in message and ":hunter2pw" not in message
    assert "\n" not in message


async def test_store_errors_after_open_are_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    async with await Store.open(f"sqlite+aiosqlite:///{path}", sqlite_busy_timeout=0.2) as s:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable):
                await s.claim_event("slack", "e1")
        finally:
            holder.rollback()
            holder.close()
        assert await s.claim_event("slack", "e1") is True


async def test_postgres_is_really_tested(db_url: str) -> None:
    """Guard against the Postgres half silently degrading into SQLite."""
    async with await Store.open(db_url) as s:
        async with s.engine.connect() as conn:
            version = (await conn.execute(text("SELECT 1"))).scalar()
    assert version == 1
    assert s.dialect in {"sqlite", "postgresql"}
    assert ("postgresql" in db_url) == (s.dialect == "postgresql")


async def test_replicas_starting_together_migrate_once(db_url: str) -> None:
    """Three processes upgrading an empty database at once: one migrates (under an advisory lock
    on Postgres, the write lock on SQLite), the others find the schema ready; none fails."""
    exe = str(Path(sys.executable).parent / "agent-bridge")
    env = {**os.environ, "BRIDGE_DATABASE_URL": db_url}
    procs = [
        await asyncio.create_subprocess_exec(
            exe, "db", "upgrade", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        for _ in range(3)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    assert [p.returncode for p in procs] == [0, 0, 0], [out.decode() for out, _ in outputs]
    async with await Store.open(db_url, migrate=False) as s:
        async with s.engine.connect() as conn:
            assert await current_revision(conn) == head_revision()
