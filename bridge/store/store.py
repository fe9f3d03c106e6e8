"""The queries the relay needs, each in its own short transaction.

Methods return frozen dataclasses, never ORM objects, so nothing outside this module can
lazy-load or hold a session open. SQLite write transactions start with `BEGIN IMMEDIATE`:
a deferred transaction that reads and then writes can fail at once with "database is
locked" instead of waiting for `busy_timeout`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import Table, delete, event, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Row, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from bridge.events import Usage
from bridge.keys import ThreadKey
from bridge.reply import ReplyStatus
from bridge.store import migrate as migrations
from bridge.store.models import (
    AuditRow,
    BindingRow,
    ConversationRow,
    ProcessedEventRow,
    ReplyRow,
    utcnow,
)

_bindings: Table = BindingRow.__table__  # type: ignore[assignment]
_conversations: Table = ConversationRow.__table__  # type: ignore[assignment]
_replies: Table = ReplyRow.__table__  # type: ignore[assignment]
_events: Table = ProcessedEventRow.__table__  # type: ignore[assignment]
_audit: Table = AuditRow.__table__  # type: ignore[assignment]

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT = 5.0
PG_THREAD_LOCK_CLASS = 0x61627468  # "abth": the advisory-lock namespace of thread queues
UNFINISHED = (ReplyStatus.QUEUED.value, ReplyStatus.STREAMING.value)
_UPDATABLE_REPLY_FIELDS = frozenset(
    {"trace_id", "conversation_id", "error_code", "owner", "lease_until", "usage",
     "inbound_event_id", "message_ids", "checkpoint"}
)


class StoreUnavailable(Exception):
    """The database cannot be reached or is locked; the message never contains the password."""


class ReplyNotFound(LookupError):
    """No reply row has this id (a bug in the caller, or the row was pruned)."""


@dataclass(frozen=True, slots=True)
class Binding:
    platform: str
    workspace: str
    channel: str
    agent_id: str
    bound_by: str
    bound_at: datetime
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Conversation:
    key: ThreadKey
    agent_id: str
    conversation_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    id: int
    key: ThreadKey
    agent_id: str
    status: ReplyStatus
    message_ids: tuple[str, ...]
    inbound_event_id: str | None
    trace_id: str | None
    conversation_id: str | None
    usage: Usage | None
    error_code: str | None
    owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    checkpoint: Mapping[str, Any] | None = field(default=None, hash=False)
    inbound: Mapping[str, Any] | None = field(default=None, hash=False)
    """The message a queued reply answers: user, text, from_bot."""
    stop_requested: bool = False


@dataclass(frozen=True, slots=True)
class QueuedReply:
    """A reply row just created for an accepted message, and its place in the thread's queue."""

    id: int
    earlier: int
    """Unfinished replies of the same thread (on any replica) created before this one."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    platform: str
    workspace: str
    channel: str
    actor: str
    action: str
    detail: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """What `/agent status` shows for one channel since a point in time."""

    replies: int
    by_status: Mapping[ReplyStatus, int] = field(hash=False)
    total_tokens: int
    input_tokens: int
    output_tokens: int
    last_error_codes: tuple[str, ...]
    """Newest first, at most five."""
    last_reply_at: datetime | None


def safe_url(url: str | URL) -> str:
    """The URL as it may appear in logs and messages: password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL must still not leak
        return "<unparseable database URL>"


def _reason(exc: BaseException, url: URL) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if url.password:
        text = text.replace(str(url.password), "***")
    return f"{type(orig).__name__}: {text}"


def _unavailable(exc: BaseException, url: URL, doing: str) -> StoreUnavailable:
    return StoreUnavailable(
        f"database unavailable while {doing} {url.render_as_string(hide_password=True)} "
        f"(check BRIDGE_DATABASE_URL): {_reason(exc, url)}"
    )


def _connect_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "cannot reach the database"; asyncpg raises its own at connect time."""
    errors: tuple[type[BaseException], ...] = (DBAPIError, OSError, TimeoutError)
    try:
        import asyncpg

        errors += (asyncpg.PostgresError, asyncpg.InterfaceError)
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        pass
    return errors


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


def make_engine(
    url: str | URL,
    *,
    connect_timeout: float = 10.0,
    sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT,
) -> AsyncEngine:
    """The engine every bridge component (and alembic's env.py) uses for `url`.

    SQLite: WAL, foreign keys, busy timeout, parent directory created, and
    `execution_options(bridge_write=True)` connections begin with BEGIN IMMEDIATE.
    Postgres: pre-ping, since pooled connections die with server restarts.
    """
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, sqlite_busy_timeout)
    return create_async_engine(
        url, pool_pre_ping=True, connect_args={"timeout": connect_timeout}
    )


def _sqlite_engine(url: URL, busy_timeout: float) -> AsyncEngine:
    memory = _is_memory(url)
    if not memory and url.database:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        connect_args={"timeout": busy_timeout},
        # Every transaction ends in an explicit commit or rollback (`Store._tx`), so the pool's
        # extra rollback on check-in would only cost one more trip to the connection's thread.
        pool_reset_on_return=None,
        **({"poolclass": StaticPool} if memory else {}),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below); the driver's implicit BEGIN can't be IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Each aiosqlite call is a trip to the connection's thread and back through the event
        # loop (a BEGIN costs three). A lone statement is atomic by itself, so reads and
        # single-statement writes run without one; a multi-statement write takes the write
        # lock up front, so it can't fail half-way with "database is locked".
        options = conn.get_execution_options()
        if options.get("bridge_write", False) and not options.get("bridge_single", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _key(row: Row[Any]) -> ThreadKey:
    return ThreadKey(row.platform, row.workspace, row.channel, row.thread)


def _usage_to_json(usage: Usage | Mapping[str, Any] | None) -> dict[str, int] | None:
    if usage is None:
        return None
    if isinstance(usage, Usage):
        total, inp, out = usage.total_tokens, usage.input_tokens, usage.output_tokens
    else:
        total, inp, out = (usage.get(k) for k in ("total_tokens", "input_tokens", "output_tokens"))
    if total is None and (inp is not None or out is not None):
        total = (inp or 0) + (out or 0)  # so sums over `total_tokens` count every reply
    data = {"total_tokens": total, "input_tokens": inp, "output_tokens": out}
    return {k: int(v) for k, v in data.items() if v is not None}


def _usage_from_json(data: Mapping[str, Any] | None) -> Usage | None:
    if not data:
        return None
    return Usage(data.get("total_tokens"), data.get("input_tokens"), data.get("output_tokens"))


def _binding(row: Row[Any]) -> Binding:
    return Binding(
        row.platform, row.workspace, row.channel, row.agent_id, row.bound_by, row.bound_at,
        dict(row.options or {}),
    )


def _conversation(row: Row[Any]) -> Conversation:
    return Conversation(_key(row), row.agent_id, row.conversation_id, row.created_at, row.updated_at)


def _reply(row: Row[Any]) -> ReplyRecord:
    return ReplyRecord(
        id=row.id,
        key=_key(row),
        agent_id=row.agent_id,
        status=ReplyStatus(row.status),
        message_ids=tuple(row.message_ids or ()),
        inbound_event_id=row.inbound_event_id,
        trace_id=row.trace_id,
        conversation_id=row.conversation_id,
        usage=_usage_from_json(row.usage),
        error_code=row.error_code,
        owner=row.owner,
        lease_until=row.lease_until,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        checkpoint=row.checkpoint,
        inbound=row.inbound,
        stop_requested=row.stop_requested_at is not None,
    )


def _audit_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        row.id, row.at, row.platform, row.workspace, row.channel, row.actor, row.action,
        dict(row.detail or {}),
    )


def _where_key(table: Table, key: ThreadKey) -> tuple[Any, ...]:
    return (
        table.c.platform == key.platform,
        table.c.workspace == key.workspace,
        table.c.channel == key.channel,
        table.c.thread == key.thread,
    )


def _new_reply(key: ThreadKey, now: datetime, status: ReplyStatus) -> dict[str, Any]:
    """The columns every new reply row starts with."""
    return {
        "platform": key.platform, "workspace": key.workspace, "channel": key.channel,
        "thread": key.thread, "message_ids": [], "status": status.value,
        "created_at": now, "updated_at": now,
    }


def _lock_name(key: ThreadKey) -> str:
    return "\x1f".join((key.platform, key.workspace, key.channel, key.thread))


def _where_channel(table: Table, platform: str, workspace: str, channel: str) -> tuple[Any, ...]:
    return (
        table.c.platform == platform,
        table.c.workspace == workspace,
        table.c.channel == channel,
    )


def _finish_even_if_cancelled(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """A write whose caller is cancelled (Stop, shutdown) still runs to its commit or rollback:
    cut off mid-transaction, a pooled SQLite connection could keep the write lock and every
    other writer would time out with "database is locked"."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        task = asyncio.ensure_future(method(*args, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # nobody waits for it now
            raise

    return wrapper


class Store:
    """Async access to the bridge database. Create with `await Store.open(url)`."""

    def __init__(
        self, engine: AsyncEngine, url: URL, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(bridge_write=True)
        self._single_write_engine = engine.execution_options(bridge_write=True, bridge_single=True)
        self._url = url
        self._clock = clock
        self._dialect = engine.dialect.name
        # One shared in-memory SQLite connection can't run two transactions at once.
        self._serial = asyncio.Lock() if self._dialect == "sqlite" and _is_memory(url) else None
        # SQLite has one writer at a time. Writers of this process queue here, in order, rather
        # than in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) and leaves
        # the lock idle meanwhile; other processes still meet the busy timeout.
        self._writers = asyncio.Lock() if self._dialect == "sqlite" and self._serial is None else None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        connect_timeout: float = 10.0,
        sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT,
        clock: Callable[[], datetime] = utcnow,
    ) -> Self:
        """Connect (and by default migrate to head); `StoreUnavailable` if that fails.

        `connect_timeout` is for Postgres; SQLite waits up to `sqlite_busy_timeout` seconds
        for a lock held by another process before giving up.
        """
        parsed = make_url(url)
        try:
            engine = make_engine(
                parsed, connect_timeout=connect_timeout, sqlite_busy_timeout=sqlite_busy_timeout
            )
        except OSError as exc:  # e.g. the SQLite directory can't be created
            raise _unavailable(exc, parsed, "opening") from None
        store = cls(engine, parsed, clock=clock)
        try:
            async with store._write_engine.begin() as conn:
                if migrate:
                    await migrations.upgrade_connection(conn)
                else:
                    await conn.exec_driver_sql("SELECT 1")
        except _connect_errors() as exc:
            await engine.dispose()
            raise _unavailable(exc, parsed, "connecting to") from None
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self, timeout: float = 2.0) -> None:
        """One `SELECT 1` within `timeout` seconds, for readiness probes; `StoreUnavailable`
        (password hidden) when the database does not answer in time."""
        try:
            async with asyncio.timeout(timeout), self._serial or nullcontext(), self._engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except TimeoutError:
            raise StoreUnavailable(f"database did not answer within {timeout:g}s") from None
        except Exception as exc:  # noqa: BLE001 - any failure here means "not ready"
            raise _unavailable(exc, self._url, "pinging") from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql"."""
        return self._dialect

    @property
    def engine(self) -> AsyncEngine:
        """For tests and diagnostics; application code should use the methods."""
        return self._engine

    @asynccontextmanager
    async def _tx(self, *, write: bool = False, single: bool = False) -> AsyncIterator[AsyncConnection]:
        """One short transaction; connection-level failures become `StoreUnavailable`.

        `single`: the write is one statement (on SQLite it then runs without BEGIN IMMEDIATE).
        Reads on SQLite are single statements too, or tolerate seeing two snapshots."""
        engine = (self._single_write_engine if single else self._write_engine) if write else self._engine
        guard: AbstractAsyncContextManager[Any] = self._serial or (write and self._writers) or nullcontext()
        try:
            async with guard, engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError, OSError, PoolTimeout) as exc:
            # PoolTimeout: every pooled connection busy for too long — as unavailable as a dead server
            raise _unavailable(exc, self._url, "using") from exc

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT."""
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    # -- de-duplication ------------------------------------------------------------------

    @_finish_even_if_cancelled
    async def claim_event(self, platform: str, event_id: str) -> bool:
        """True only for the first delivery of an event, across processes sharing the DB."""
        stmt = (
            self._insert(_events)
            .values(platform=platform, event_id=event_id, received_at=self._clock())
            .on_conflict_do_nothing(index_elements=["platform", "event_id"])
            .returning(_events.c.event_id)
        )
        async with self._tx(write=True, single=True) as conn:
            return (await conn.execute(stmt)).first() is not None

    @_finish_even_if_cancelled
    async def prune_events(self, older_than: timedelta) -> int:
        """Forget claims older than the platforms' retry window; returns how many."""
        cutoff = self._clock() - older_than
        async with self._tx(write=True, single=True) as conn:
            result = await conn.execute(delete(_events).where(_events.c.received_at < cutoff))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- bindings ------------------------------------------------------------------------

    async def get_binding(self, platform: str, workspace: str, channel: str) -> Binding | None:
        stmt = select(_bindings).where(*_where_channel(_bindings, platform, workspace, channel))
        async with self._tx() as conn:
            row = (await conn.execute(stmt)).first()
        return _binding(row) if row else None

    @_finish_even_if_cancelled
    async def bind(
        self,
        platform: str,
        workspace: str,
        channel: str,
        agent_id: str,
        actor: str,
        options: Mapping[str, Any] | None = None,
    ) -> Binding:
        """Bind (or re-bind) a channel to an agent; `options=None` keeps existing options."""
        now = self._clock()
        where = _where_channel(_bindings, platform, workspace, channel)
        async with self._tx(write=True) as conn:
            prev = (
                await conn.execute(select(_bindings).where(*where).with_for_update())
            ).first()
            new_options = dict(options) if options is not None else dict(prev.options if prev else {})
            ins = self._insert(_bindings).values(
                platform=platform, workspace=workspace, channel=channel, agent_id=agent_id,
                bound_by=actor, bound_at=now, options=new_options,
            )
            stmt = ins.on_conflict_do_update(
                index_elements=["platform", "workspace", "channel"],
                set_={"agent_id": agent_id, "bound_by": actor, "bound_at": now,
                      "options": ins.excluded.options},
            ).returning(*_bindings.c)
            row = (await conn.execute(stmt)).one()
            await self._write_audit(
                conn, platform, workspace, channel, actor, "binding.set",
                {"agent_id": agent_id, "previous_agent_id": prev.agent_id if prev else None,
                 "options": new_options},
            )
        return _binding(row)

    @_finish_even_if_cancelled
    async def unbind(self, platform: str, workspace: str, channel: str, actor: str) -> bool:
        """Remove a channel's binding; False (and no audit entry) when there was none."""
        stmt = (
            delete(_bindings)
            .where(*_where_channel(_bindings, platform, workspace, channel))
            .returning(_bindings.c.agent_id)
        )
        async with self._tx(write=True) as conn:
            gone = (await conn.execute(stmt)).first()
            if gone is None:
                return False
            await self._write_audit(
                conn, platform, workspace, channel, actor, "binding.removed",
                {"agent_id": gone.agent_id},
            )
        return True

    async def list_bindings(self, platform: str | None = None) -> list[Binding]:
        stmt = select(_bindings).order_by(
            _bindings.c.platform, _bindings.c.workspace, _bindings.c.channel
        )
        if platform is not None:
            stmt = stmt.where(_bindings.c.platform == platform)
        async with self._tx() as conn:
            return [_binding(r) for r in await conn.execute(stmt)]

    # -- conversations -------------------------------------------------------------------

    async def get_conversation(self, key: ThreadKey) -> Conversation | None:
        stmt = select(_conversations).where(*_where_key(_conversations, key))
        async with self._tx() as conn:
            row = (await conn.execute(stmt)).first()
        return _conversation(row) if row else None

    @_finish_even_if_cancelled
    async def start_conversation(self, key: ThreadKey, agent_id: str) -> Conversation:
        """The thread's conversation, created if absent; an existing one keeps its agent."""
        now = self._clock()
        ins = (
            self._insert(_conversations)
            .values(
                platform=key.platform, workspace=key.workspace, channel=key.channel,
                thread=key.thread, agent_id=agent_id, conversation_id=None,
                created_at=now, updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["platform", "workspace", "channel", "thread"])
        )
        async with self._tx(write=True) as conn:
            await conn.execute(ins)
            row = (
                await conn.execute(select(_conversations).where(*_where_key(_conversations, key)))
            ).one()
        return _conversation(row)

    async def set_conversation_id(self, key: ThreadKey, conversation_id: str) -> bool:
        """Record the upstream id as soon as it is known; False if the thread was reset meanwhile."""
        return await self._update_conversation(key, conversation_id)

    async def forget_conversation_id(self, key: ThreadKey) -> bool:
        """Drop a stale upstream id (e.g. upstream answered 404) but keep the thread's agent."""
        return await self._update_conversation(key, None)

    @_finish_even_if_cancelled
    async def _update_conversation(self, key: ThreadKey, conversation_id: str | None) -> bool:
        stmt = (
            update(_conversations)
            .where(*_where_key(_conversations, key))
            .values(conversation_id=conversation_id, updated_at=self._clock())
            .returning(_conversations.c.id)
        )
        async with self._tx(write=True, single=True) as conn:
            return (await conn.execute(stmt)).first() is not None

    @_finish_even_if_cancelled
    async def reset_conversation(self, key: ThreadKey, actor: str) -> bool:
        """Delete the thread's conversation so the next message starts fresh (audited)."""
        stmt = (
            delete(_conversations)
            .where(*_where_key(_conversations, key))
            .returning(_conversations.c.agent_id, _conversations.c.conversation_id)
        )
        async with self._tx(write=True) as conn:
            gone = (await conn.execute(stmt)).first()
            if gone is None:
                return False
            await self._write_audit(
                conn, key.platform, key.workspace, key.channel, actor, "conversation.reset",
                {"thread": key.thread, "agent_id": gone.agent_id,
                 "conversation_id": gone.conversation_id},
            )
        return True

    # -- replies -------------------------------------------------------------------------

    @_finish_even_if_cancelled
    async def create_reply(
        self,
        key: ThreadKey,
        agent_id: str,
        inbound_event_id: str | None = None,
        owner: str | None = None,
    ) -> int:
        """A new `streaming` reply; returns its id."""
        stmt = (
            _replies.insert()
            .values(
                **_new_reply(key, self._clock(), ReplyStatus.STREAMING),
                agent_id=agent_id, inbound_event_id=inbound_event_id, owner=owner,
            )
            .returning(_replies.c.id)
        )
        async with self._tx(write=True) as conn:
            return int((await conn.execute(stmt)).scalar_one())

    @_finish_even_if_cancelled
    async def add_reply_message(self, reply_id: int, message_id: str) -> None:
        """Remember a posted platform message (idempotent), so it can be edited after a crash."""
        async with self._tx(write=True) as conn:
            current = (
                await conn.execute(
                    select(_replies.c.message_ids).where(_replies.c.id == reply_id).with_for_update()
                )
            ).first()
            if current is None:
                raise ReplyNotFound(reply_id)
            ids = list(current.message_ids or [])
            if message_id in ids:
                return
            ids.append(message_id)
            await conn.execute(
                update(_replies)
                .where(_replies.c.id == reply_id)
                .values(message_ids=ids, updated_at=self._clock())
            )

    @_finish_even_if_cancelled
    async def finish_reply(
        self,
        reply_id: int,
        status: ReplyStatus | str,
        *,
        trace_id: str | None = None,
        conversation_id: str | None = None,
        usage: Usage | Mapping[str, Any] | None = None,
        error_code: str | None = None,
        owner: str | None = None,
    ) -> bool:
        """Mark a queued or streaming reply finished; the first finish wins (returns False
        afterwards). With `owner`, only while that replica still holds the reply's lease (False
        once another replica has taken it over). Fields passed as None are left as they are.
        """
        status = ReplyStatus(status)
        if not status.finished:
            raise ValueError(f"finish_reply needs a finished status, not {status.value!r}")
        now = self._clock()
        values: dict[str, Any] = {"status": status.value, "finished_at": now, "updated_at": now}
        extra = {"trace_id": trace_id, "conversation_id": conversation_id,
                 "usage": _usage_to_json(usage), "error_code": error_code}
        values.update({k: v for k, v in extra.items() if v is not None})
        stmt = (
            update(_replies)
            .where(_replies.c.id == reply_id, _replies.c.status.in_(UNFINISHED))
            .values(**values)
            .returning(_replies.c.id)
        )
        if owner is not None:
            stmt = stmt.where(_replies.c.owner == owner)
        async with self._tx(write=True, single=True) as conn:
            if (await conn.execute(stmt)).first() is not None:
                return True
            exists = (
                await conn.execute(select(_replies.c.id).where(_replies.c.id == reply_id))
            ).first()
        if exists is None:
            raise ReplyNotFound(reply_id)
        return False

    @_finish_even_if_cancelled
    async def update_reply(self, reply_id: int, **fields: Any) -> None:
        """Set some of: trace_id, conversation_id, error_code, owner, lease_until, usage,
        inbound_event_id, message_ids, checkpoint. Status changes go through `finish_reply`."""
        unknown = set(fields) - _UPDATABLE_REPLY_FIELDS
        if unknown:
            raise TypeError(f"update_reply: cannot set {', '.join(sorted(unknown))}")
        if "usage" in fields:
            fields["usage"] = _usage_to_json(fields["usage"])
        if "message_ids" in fields:
            fields["message_ids"] = list(fields["message_ids"])
        stmt = (
            update(_replies)
            .where(_replies.c.id == reply_id)
            .values(**fields, updated_at=self._clock())
            .returning(_replies.c.id)
        )
        async with self._tx(write=True, single=True) as conn:
            if (await conn.execute(stmt)).first() is None:
                raise ReplyNotFound(reply_id)

    # -- several replicas: thread queues and leases -------------------------------------

    @_finish_even_if_cancelled
    async def enqueue_reply(
        self,
        key: ThreadKey,
        *,
        owner: str,
        lease_until: datetime,
        inbound: Mapping[str, Any] | None = None,
        inbound_event_id: str | None = None,
    ) -> QueuedReply:
        """A `queued` reply for an accepted message, leased to `owner`, and how many unfinished
        replies of its thread are ahead of it. Replicas enqueue one thread's messages one at a
        time (an advisory lock on Postgres, the write lock on SQLite), so ids give the order."""
        insert = (
            _replies.insert()
            .values(
                **_new_reply(key, self._clock(), ReplyStatus.QUEUED),
                agent_id=None, inbound_event_id=inbound_event_id, owner=owner,
                lease_until=lease_until, inbound=dict(inbound) if inbound else None,
            )
            .returning(_replies.c.id)
        )
        # On SQLite the insert and the count need no transaction around them: writers are
        # serialized, so every row with a smaller id was committed before this insert.
        async with self._tx(write=True, single=True) as conn:
            if self._dialect == "postgresql":
                await conn.execute(
                    select(func.pg_advisory_xact_lock(PG_THREAD_LOCK_CLASS, func.hashtext(_lock_name(key))))
                )
            reply_id = int((await conn.execute(insert)).scalar_one())
            earlier = await conn.scalar(self._earlier(key, reply_id))
        return QueuedReply(reply_id, int(earlier or 0))

    def _earlier(self, key: ThreadKey, reply_id: int) -> Any:
        return select(func.count()).where(
            *_where_key(_replies, key), _replies.c.id < reply_id, _replies.c.status.in_(UNFINISHED)
        )

    async def earlier_unfinished(self, key: ThreadKey, reply_id: int) -> int:
        """Unfinished replies of `key`'s thread created before `reply_id` (0: its turn has come)."""
        async with self._tx() as conn:
            return int(await conn.scalar(self._earlier(key, reply_id)) or 0)

    @_finish_even_if_cancelled
    async def start_reply(self, reply_id: int, agent_id: str, owner: str) -> bool:
        """queued → streaming with its agent; False if `owner` no longer holds the reply."""
        stmt = (
            update(_replies)
            .where(
                _replies.c.id == reply_id,
                _replies.c.status == ReplyStatus.QUEUED.value,
                _replies.c.owner == owner,
            )
            .values(status=ReplyStatus.STREAMING.value, agent_id=agent_id, updated_at=self._clock())
            .returning(_replies.c.id)
        )
        async with self._tx(write=True, single=True) as conn:
            return (await conn.execute(stmt)).first() is not None

    @_finish_even_if_cancelled
    async def renew_leases(self, owner: str, until: datetime) -> dict[int, bool]:
        """Extend every unfinished reply `owner` holds; returns them, each with whether someone
        asked (on another replica) to stop it. A reply missing from the answer was taken over."""
        stmt = (
            update(_replies)
            .where(_replies.c.owner == owner, _replies.c.status.in_(UNFINISHED))
            .values(lease_until=until)
            .returning(_replies.c.id, _replies.c.stop_requested_at)
        )
        async with self._tx(write=True, single=True) as conn:
            return {row.id: row.stop_requested_at is not None for row in await conn.execute(stmt)}

    @_finish_even_if_cancelled
    async def take_over_expired(
        self, platform: str, owner: str, until: datetime, limit: int = 100
    ) -> list[ReplyRecord]:
        """Claim (for `owner`, until `until`) this platform's unfinished replies whose lease ran
        out — their replica died or lost the database. Two replicas never claim the same row."""
        now = self._clock()
        expired = (
            _replies.c.platform == platform,
            _replies.c.status.in_(UNFINISHED),
            or_(_replies.c.lease_until.is_(None), _replies.c.lease_until < now),
        )
        ids = select(_replies.c.id).where(*expired).order_by(_replies.c.id).limit(limit)
        if self._dialect == "postgresql":
            ids = ids.with_for_update(skip_locked=True)
        stmt = (
            update(_replies)
            .where(_replies.c.id.in_(ids.scalar_subquery()), *expired)
            .values(owner=owner, lease_until=until, updated_at=now)
            .returning(*_replies.c)
        )
        async with self._tx(write=True, single=True) as conn:
            rows = [_reply(r) for r in await conn.execute(stmt)]
        return sorted(rows, key=lambda r: r.id)

    @_finish_even_if_cancelled
    async def release_replies(self, owner: str, reply_ids: Iterable[int]) -> int:
        """Give up queued replies (shutting down) so another replica answers them at once."""
        ids = list(reply_ids)
        if not ids:
            return 0
        stmt = (
            update(_replies)
            .where(
                _replies.c.id.in_(ids),
                _replies.c.owner == owner,
                _replies.c.status == ReplyStatus.QUEUED.value,
            )
            .values(owner=None, lease_until=None, updated_at=self._clock())
            .returning(_replies.c.id)
        )
        async with self._tx(write=True, single=True) as conn:
            return len((await conn.execute(stmt)).all())

    @_finish_even_if_cancelled
    async def request_stop(self, key: ThreadKey) -> bool:
        """Ask whichever replica streams `key`'s reply to stop it (it sees this within seconds)."""
        stmt = (
            update(_replies)
            .where(*_where_key(_replies, key), _replies.c.status == ReplyStatus.STREAMING.value)
            .values(stop_requested_at=self._clock())
            .returning(_replies.c.id)
        )
        async with self._tx(write=True, single=True) as conn:
            return bool((await conn.execute(stmt)).all())

    @_finish_even_if_cancelled
    async def checkpoint_reply(self, reply_id: int, checkpoint: Mapping[str, Any]) -> bool:
        """Save a streaming reply's visible state; True when a Stop was requested elsewhere."""
        stmt = (
            update(_replies)
            .where(_replies.c.id == reply_id)
            .values(checkpoint=dict(checkpoint), updated_at=self._clock())
            .returning(_replies.c.stop_requested_at)
        )
        async with self._tx(write=True, single=True) as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise ReplyNotFound(reply_id)
        return row.stop_requested_at is not None

    async def get_reply(self, reply_id: int) -> ReplyRecord:
        async with self._tx() as conn:
            row = (await conn.execute(select(_replies).where(_replies.c.id == reply_id))).first()
        if row is None:
            raise ReplyNotFound(reply_id)
        return _reply(row)

    async def unfinished_replies(self, owner: str | None = None) -> list[ReplyRecord]:
        """Replies still queued or streaming (all, or one owner's): after a crash these get finished."""
        stmt = select(_replies).where(_replies.c.status.in_(UNFINISHED)).order_by(_replies.c.id)
        if owner is not None:
            stmt = stmt.where(_replies.c.owner == owner)
        async with self._tx() as conn:
            return [_reply(r) for r in await conn.execute(stmt)]

    async def recent_replies(
        self, key: ThreadKey, limit: int = 20, *, whole_channel: bool = False
    ) -> list[ReplyRecord]:
        """Newest first, in the thread (or with `whole_channel`, in the thread's channel)."""
        where = (
            _where_channel(_replies, key.platform, key.workspace, key.channel)
            if whole_channel
            else _where_key(_replies, key)
        )
        stmt = (
            select(_replies)
            .where(*where)
            .order_by(_replies.c.created_at.desc(), _replies.c.id.desc())
            .limit(limit)
        )
        async with self._tx() as conn:
            return [_reply(r) for r in await conn.execute(stmt)]

    async def usage_summary(
        self, platform: str, workspace: str, channel: str, since: datetime | None = None
    ) -> UsageSummary:
        """Counts by status, token sums and the latest error codes for one channel."""
        where = list(_where_channel(_replies, platform, workspace, channel))
        if since is not None:
            where.append(_replies.c.created_at >= since)
        usage = _replies.c.usage
        totals = select(
            func.count(),
            func.coalesce(func.sum(usage["total_tokens"].as_integer()), 0),
            func.coalesce(func.sum(usage["input_tokens"].as_integer()), 0),
            func.coalesce(func.sum(usage["output_tokens"].as_integer()), 0),
            func.max(_replies.c.created_at),
        ).where(*where)
        by_status = (
            select(_replies.c.status, func.count()).where(*where).group_by(_replies.c.status)
        )
        errors = (
            select(_replies.c.error_code)
            .where(*where, _replies.c.error_code.is_not(None))
            .order_by(_replies.c.updated_at.desc(), _replies.c.id.desc())
            .limit(5)
        )
        async with self._tx() as conn:
            count, total, inp, out, last = (await conn.execute(totals)).one()
            statuses = {ReplyStatus(s): int(n) for s, n in await conn.execute(by_status)}
            codes = tuple((await conn.execute(errors)).scalars())
        return UsageSummary(int(count), statuses, int(total), int(inp), int(out), codes, last)

    # -- audit ---------------------------------------------------------------------------

    async def audit(
        self,
        platform: str,
        workspace: str,
        channel: str,
        actor: str,
        action: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        async with self._tx(write=True) as conn:
            await self._write_audit(conn, platform, workspace, channel, actor, action, detail)

    async def _write_audit(
        self,
        conn: AsyncConnection,
        platform: str,
        workspace: str,
        channel: str,
        actor: str,
        action: str,
        detail: Mapping[str, Any] | None,
    ) -> None:
        await conn.execute(
            _audit.insert().values(
                at=self._clock(), platform=platform, workspace=workspace, channel=channel,
                actor=actor, action=action, detail=dict(detail or {}),
            )
        )

    async def recent_audit(self, limit: int = 50, platform: str | None = None) -> list[AuditEntry]:
        """Newest first."""
        stmt = select(_audit).order_by(_audit.c.id.desc()).limit(limit)
        if platform is not None:
            stmt = stmt.where(_audit.c.platform == platform)
        async with self._tx() as conn:
            return [_audit_entry(r) for r in await conn.execute(stmt)]

