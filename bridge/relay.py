"""The use case: one inbound chat message becomes one streamed, persisted reply.

inbound → de-duplicate → queue a leased reply row (the message kept with it) → wait for the
thread's earlier replies, on any replica → choose agent and conversation → placeholder →
stream → scheduled edits → final edit → persist. Platform details stay behind the `Surface`;
upstream details behind the agent client's event union.

Several replicas may share one database. Each holds its unfinished replies under a lease it
renews; a replica's `recover` loop takes over replies whose lease ran out, finalizing the ones
that were streaming (shown as interrupted) and answering the ones still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.budget import Budgets
from bridge.config import Settings
from bridge.events import AgentEvent, ConversationStarted, Failed
from bridge.failures import AgentFailure, FailureCode
from bridge.keys import MessageRef, ThreadKey
from bridge.limits import MessageLimiter
from bridge.logs import bind_log_fields, log_context
from bridge.metrics import Metrics
from bridge.reply import Reply, ReplyState, ReplyStatus, reply_from_json, reply_to_json
from bridge.scheduler import DeliveryFailed, ReplyWriter
from bridge.split import StableSplitter
from bridge.store import ReplyRecord, StoreUnavailable
from bridge.surface import MessageGone, Surface

log = logging.getLogger("bridge.relay")

STOPPED_NOTICE = "Stopped."
INTERRUPTED_NOTICE = "This answer was interrupted before it finished. Send your message again to get a full answer."
NEW_CONVERSATION_NOTICE = "The earlier conversation had expired upstream, so this answer starts a new one."
DATABASE_DOWN_TEXT = "I can't reach my database right now, so I can't answer safely; please try again in a minute."
RESTARTING_TEXT = "I'm restarting right now and can't take new questions; please send your message again in a minute."
CHECKPOINT_INTERVAL = 2.0
"""Seconds between saves of a streaming reply's state, which a restart uses to finalize it."""
FINAL_FLUSH_TIMEOUT = 5.0
"""Seconds a cancelled reply may take to show that it was interrupted."""
DEFAULT_BIND_HINT = "agent-bridge bind --platform {platform} --workspace {workspace} --channel {channel} AGENT_ID"
TURN_POLL = 0.2
"""Seconds between checks whether an earlier reply of the thread, on another replica, finished."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """A chat message addressed to the bot, already translated by an adapter."""

    thread: ThreadKey
    user: str
    text: str
    event_id: str | None = None
    from_bot: bool = False
    """Written by another bot (the adapter already checked the binding allows bots at all)."""


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """What became of one inbound message."""

    reply: Reply | None
    messages: tuple[MessageRef, ...] = ()
    reply_id: int | None = None
    agent_id: str | None = None
    duplicate: bool = False
    handed_over: bool = False
    """Another replica answers (or finalizes) it: this one shut down or lost its lease."""

    @property
    def ok(self) -> bool:
        return self.reply is not None and self.reply.status is ReplyStatus.DONE


class ThreadLanes:
    """One FIFO lock per thread, dropped when nobody holds or waits for it.

    Held only while a message is claimed and queued, so the database ids follow arrival order
    even when those round trips finish out of order."""

    def __init__(self) -> None:
        self._lanes: dict[ThreadKey, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, thread: ThreadKey) -> AsyncIterator[None]:
        lock, users = self._lanes.get(thread, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._lanes[thread] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._lanes[thread]
            if users <= 1:
                del self._lanes[thread]
            else:
                self._lanes[thread] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._lanes)


class BotTurns:
    """Consecutive bot-written messages answered per channel, so two bots never talk forever.

    Bots may get `limit` answers in a row in one channel; a person's message there resets the
    count. Per channel, not per thread: on Discord every channel mention is its own thread.
    Per process and bounded (the oldest channels are forgotten first).
    """

    def __init__(self, limit: int = 1, capacity: int = 10_000) -> None:
        self.limit = limit
        self.capacity = capacity
        self._turns: OrderedDict[tuple[str, str, str], int] = OrderedDict()

    def allow(self, inbound: Inbound) -> bool:
        t = inbound.thread
        channel = (t.platform, t.workspace, t.channel)
        if not inbound.from_bot:
            self._turns.pop(channel, None)
            return True
        turns = self._turns.pop(channel, 0)
        self._turns[channel] = turns + 1
        if len(self._turns) > self.capacity:
            self._turns.popitem(last=False)
        return turns < self.limit


class Relay:
    """Drives replies. One instance per process; adapters share it."""

    def __init__(
        self,
        store,  # bridge.store.Store (kept untyped here to avoid an import cycle in type checkers)
        agent,  # bridge.agent.AgentClient
        settings: Settings,
        *,
        budgets: Budgets | None = None,
        owner: str | None = None,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        turn_poll: float = TURN_POLL,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.agent = agent
        self.settings = settings
        self.budgets = budgets or Budgets()
        # Random part: a restarted container often has the same host name and pid as the dead one.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.checkpoint_interval = checkpoint_interval
        self.turn_poll = turn_poll
        self.lease = timedelta(seconds=settings.bridge_lease_seconds)
        self.metrics = metrics or Metrics()  # a private registry when nobody scrapes (tests, benchmarks)
        self.lanes = ThreadLanes()
        self.bot_turns = BotTurns()
        self.accepting = True
        self._interrupting = False
        self._streams: dict[int, asyncio.Task[None]] = {}
        self._by_thread: dict[ThreadKey, int] = {}
        self._held: set[int] = set()
        """Unfinished replies whose lease this relay renews."""
        self._lost: set[int] = set()
        """Held replies another replica took over (or that were handed over at shutdown)."""
        self._waiting: set[int] = set()
        self._turns: dict[ThreadKey, asyncio.Event] = {}
        self._unsettled: dict[int, tuple[str, str]] = {}
        """Replies to finish once the database is back: id → (status, error code)."""
        self._leases: asyncio.Task[None] | None = None
        self._adopted: set[asyncio.Task[ReplyOutcome]] = set()
        self._answering = 0
        self._idle = asyncio.Event()
        self._idle.set()
        user_spec, channel_spec = settings.user_rate_limit, settings.channel_rate_limit
        self._user_limit = MessageLimiter(user_spec) if user_spec else None
        self._channel_limit = MessageLimiter(channel_spec) if channel_spec else None

    # -- public ------------------------------------------------------------------------

    async def handle(self, inbound: Inbound, surface: Surface) -> ReplyOutcome:
        """Answer one inbound message; never raises for a database or platform outage."""
        try:
            return await self._handle(inbound, surface)
        except StoreUnavailable as exc:
            log.error("database unavailable while answering in %s: %s", inbound.thread, exc)
            return await self.say(surface, inbound.thread, DATABASE_DOWN_TEXT)

    async def _handle(self, inbound: Inbound, surface: Surface) -> ReplyOutcome:
        thread = inbound.thread
        # The lane comes first (entering it does not yield), so messages of one thread keep
        # their arrival order even when the de-duplication round trips finish out of order.
        async with self.lanes.hold(thread):
            if inbound.event_id and not await self.store.claim_event(thread.platform, inbound.event_id):
                log.info("duplicate delivery %s in %s ignored", inbound.event_id, thread)
                return ReplyOutcome(reply=None, duplicate=True)
            if not self.bot_turns.allow(inbound):
                log.info("not answering bot %s again in %s until a person speaks there", inbound.user, thread)
                return ReplyOutcome(reply=None)
            refusal = self._refusal(inbound)
            if refusal is not None:
                return await self.say(surface, thread, refusal)
            queued = await self.store.enqueue_reply(
                thread,
                owner=self.owner,
                lease_until=self._lease_end(),
                inbound={"user": inbound.user, "text": inbound.text, "from_bot": inbound.from_bot},
                inbound_event_id=inbound.event_id,
            )
            self._hold(queued.id)
        return await self._answer_in_turn(inbound, surface, queued.id, queued.earlier)

    async def _answer_in_turn(
        self, inbound: Inbound, surface: Surface, reply_id: int, earlier: int
    ) -> ReplyOutcome:
        """Answer a queued reply (held by this relay) once the thread's earlier ones finished."""
        thread = inbound.thread
        self._answering += 1
        self._idle.clear()
        try:
            with log_context(
                platform=thread.platform, workspace=thread.workspace, channel=thread.channel, thread=thread.thread
            ):
                bind_log_fields(reply_id=reply_id)
                try:
                    if earlier and not await self._wait_turn(thread, reply_id):
                        return ReplyOutcome(reply=None, reply_id=reply_id, handed_over=True)
                    return await self._answer(inbound, surface, reply_id)
                except StoreUnavailable:
                    # Finished (failed) once the database is back, so the thread's queue moves on
                    # and no replica answers it later: the user is told to ask again.
                    self._unsettled.setdefault(reply_id, (ReplyStatus.FAILED.value, "database_unavailable"))
                    raise
                except Exception:
                    # A bug: finish the row now, or a later replica would take the message up again.
                    await self._finish_or_later(reply_id, ReplyStatus.FAILED.value, FailureCode.INTERNAL.value)
                    raise
                finally:
                    self._let_go(reply_id, thread)
        finally:
            self._answering -= 1
            if self._answering == 0:
                self._idle.set()

    async def _wait_turn(self, thread: ThreadKey, reply_id: int) -> bool:
        """Wait until every earlier unfinished reply of the thread, on any replica, finished.
        A local finish wakes us at once; another replica's is seen within `turn_poll`.
        False when the reply was handed over meanwhile."""
        self._waiting.add(reply_id)
        try:
            while reply_id not in self._lost:
                event = self._turns.get(thread)
                if event is None or event.is_set():
                    event = self._turns[thread] = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.turn_poll)
                if reply_id in self._lost:
                    break
                if not await self.store.earlier_unfinished(thread, reply_id):
                    return True
            return False
        finally:
            self._waiting.discard(reply_id)

    def _refusal(self, inbound: Inbound) -> str | None:
        """Why this message gets a bridge answer instead of an agent call, if it does."""
        if not self.accepting:
            return RESTARTING_TEXT
        text = inbound.text.strip()
        if not text:
            return "It looks like your message was empty. What would you like to ask?"
        limit = self.settings.bridge_max_message_chars
        if len(text) > limit:
            return (
                f"Your message is {len(text):,} characters long; I can take at most {limit:,}. "
                "Please shorten it or split it into several messages."
            )
        thread = inbound.thread
        for limiter, key, who in (
            (self._user_limit, (thread.platform, thread.workspace, inbound.user), "You are"),
            (self._channel_limit, (thread.platform, thread.workspace, thread.channel), "This channel is"),
        ):
            if limiter is None:
                continue
            wait = limiter.try_take(key)
            if wait:
                return (
                    f"{who} sending messages faster than the agent budget allows "
                    f"({limiter.spec.describe()}). Please try again in about {max(1, round(wait))} seconds."
                )
        return None

    async def drain(self, grace: float | None = None) -> None:
        """Shutdown: take no new messages, let replies finish for `grace` seconds, then interrupt the rest."""
        self.accepting = False
        await self._hand_over_waiting()
        grace = self.settings.bridge_shutdown_grace if grace is None else grace
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
            return
        except TimeoutError:
            pass
        log.info("shutdown grace of %.0fs over: interrupting %d replies", grace, len(self._streams))
        self._interrupting = True
        for task in list(self._streams.values()):
            task.cancel()
        try:
            await asyncio.wait_for(self._idle.wait(), FINAL_FLUSH_TIMEOUT + 1)
        except TimeoutError:
            log.warning("%d replies did not finish after being interrupted", self._answering)
        await self.close()

    async def close(self) -> None:
        """Stop renewing leases (what is still held expires and is taken over elsewhere)."""
        for task in [*self._adopted, *([self._leases] if self._leases else [])]:
            task.cancel()
        await asyncio.gather(*self._adopted, *([self._leases] if self._leases else []), return_exceptions=True)
        self._leases = None

    async def _hand_over_waiting(self) -> None:
        """Shutting down: queued replies not started yet go to another replica (or to this
        process's successor) instead of being cut off after the grace period."""
        waiting = set(self._waiting)
        if not waiting:
            return
        try:
            released = await self.store.release_replies(self.owner, waiting)
        except StoreUnavailable as exc:
            log.warning("could not hand over %d queued replies: %s", len(waiting), exc)
            return
        log.info("shutting down: handed %d queued replies over to another replica", released)
        self._lose(waiting)

    def stop(self, reply_id: int) -> bool:
        """Cancel a streaming reply (a user pressed Stop). True when one was running."""
        task = self._streams.get(reply_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def stop_thread(self, thread: ThreadKey) -> bool:
        """Stop the reply streaming in `thread`, here or on another replica (which sees the
        request at its next checkpoint or lease renewal, within seconds)."""
        reply_id = self._by_thread.get(thread)
        if reply_id is not None and self.stop(reply_id):
            return True
        try:
            return await self.store.request_stop(thread)
        except StoreUnavailable as exc:
            log.error("could not pass a Stop in %s on: %s", thread, exc)
            return False

    @property
    def in_flight(self) -> int:
        """Replies being answered right now (streaming or finishing)."""
        return self._answering

    async def say(self, surface: Surface, thread: ThreadKey, text: str) -> ReplyOutcome:
        """Post a message from the bridge itself (not the agent), paced by the same budgets as replies."""
        state = ReplyState(chunks=[text], status=ReplyStatus.DONE)
        writer = ReplyWriter(
            surface, thread, state, self.budgets, StableSplitter(surface.limits.max_text).split, metrics=self.metrics
        )
        await writer.resume([])
        await writer.finish()
        if writer.failure is not None or writer.gone:
            log.warning("could not post a bridge message in %s", thread)
        return ReplyOutcome(reply=state.snapshot(), messages=tuple(writer.messages))

    # -- one answer ----------------------------------------------------------------------

    async def _answer(self, inbound: Inbound, surface: Surface, reply_id: int) -> ReplyOutcome:
        thread = inbound.thread
        conversation = await self.store.get_conversation(thread)
        agent_id = conversation.agent_id if conversation else await self._bound_agent(thread)
        if agent_id is None:
            hint = getattr(surface, "bind_hint", DEFAULT_BIND_HINT).format(
                platform=thread.platform, workspace=thread.workspace, channel=thread.channel
            )
            outcome = await self.say(
                surface,
                thread,
                f"This channel is not bound to an agent yet — an admin can bind it with `{hint}`.",
            )
            await self.store.finish_reply(reply_id, ReplyStatus.FAILED, error_code="not_bound", owner=self.owner)
            return outcome
        if conversation is None:
            conversation = await self.store.start_conversation(thread, agent_id)
        if not await self.store.start_reply(reply_id, agent_id, self.owner):
            log.warning("reply %s in %s was taken over by another replica before it started", reply_id, thread)
            return ReplyOutcome(reply=None, reply_id=reply_id, handed_over=True)
        bind_log_fields(agent_id=agent_id)
        state = ReplyState(conversation_id=conversation.conversation_id)
        stream_task: asyncio.Task[None] | None = None

        def on_gone() -> None:
            if stream_task is not None:
                stream_task.cancel()

        saving: asyncio.Task[None] | None = None

        def on_posted(message: MessageRef) -> None:
            """Record the message id in the background (in order) so the writer never waits on the database."""
            nonlocal saving
            previous = saving

            async def save() -> None:
                if previous is not None:
                    await asyncio.gather(previous, return_exceptions=True)
                await self.store.add_reply_message(reply_id, message.stored())

            saving = asyncio.create_task(save())

        writer = ReplyWriter(
            surface,
            thread,
            state,
            self.budgets,
            StableSplitter(surface.limits.max_text).split,
            on_posted=on_posted,
            on_gone=on_gone,
            metrics=self.metrics,
        )
        changed = asyncio.Event()
        checkpoints = asyncio.create_task(self._checkpoints(reply_id, state, changed, on_stop_requested=on_gone))
        watch = self.metrics.reply_started()
        try:
            try:
                await writer.start()
            except (DeliveryFailed, MessageGone) as exc:
                log.error("could not post a reply in %s, so the agent was not asked: %s", thread, exc)
                state.finish(ReplyStatus.FAILED)
                await self.store.finish_reply(
                    reply_id, ReplyStatus.FAILED.value, error_code="delivery_failed", owner=self.owner
                )
                return ReplyOutcome(reply=state.snapshot(), reply_id=reply_id, agent_id=agent_id)
            stream_task = asyncio.create_task(
                self._pump(thread, agent_id, inbound.text, state, writer, changed),
                name=f"agent-stream {thread}",
            )
            self._streams[reply_id] = stream_task
            self._by_thread[thread] = reply_id
            try:
                await asyncio.shield(stream_task)
            except asyncio.CancelledError:
                if not stream_task.cancelled():
                    raise  # we ourselves are being cancelled (shutdown)
            except Exception:
                log.exception("reply %s in %s failed inside the bridge", reply_id, thread)
                state.apply(Failed(AgentFailure.of(FailureCode.INTERNAL, trace_id=state.trace_id)))
            if reply_id in self._lost:  # another replica finalizes it: touch nothing more
                state.finish(ReplyStatus.INTERRUPTED)  # (counted so here; never shown or stored by us)
                await writer.cancel()
                log.warning("reply %s in %s: lease lost to another replica; it finalizes the reply", reply_id, thread)
                return ReplyOutcome(reply=None, reply_id=reply_id, agent_id=agent_id, handed_over=True)
            if stream_task.cancelled() and not state.status.finished:
                if self._interrupting:
                    state.finish(ReplyStatus.INTERRUPTED, INTERRUPTED_NOTICE)
                else:
                    state.finish(ReplyStatus.STOPPED, STOPPED_NOTICE)
            elif not state.status.finished:  # the client promises a last event; never leave it hanging
                state.apply(Failed(AgentFailure.of(FailureCode.CONNECTION_DROPPED, trace_id=state.trace_id)))
            writer.notify()
            await writer.finish()
        except asyncio.CancelledError:
            if stream_task is not None:
                stream_task.cancel()
            state.finish(ReplyStatus.INTERRUPTED, INTERRUPTED_NOTICE)
            await asyncio.shield(self._interrupted(writer, reply_id, state, thread, saving))
            raise
        finally:
            watch.finished(state, writer.stats)
            checkpoints.cancel()
            self._streams.pop(reply_id, None)
            if self._by_thread.get(thread) == reply_id:
                del self._by_thread[thread]
        await self._persist(reply_id, state, thread, saving)
        return ReplyOutcome(
            reply=state.snapshot(),
            messages=tuple(writer.messages),
            reply_id=reply_id,
            agent_id=agent_id,
        )

    async def _checkpoints(
        self, reply_id: int, state: ReplyState, changed: asyncio.Event, on_stop_requested: Callable[[], None]
    ) -> None:
        """Save the reply's state soon after it changes, then at most every `checkpoint_interval`,
        so a restart after a crash can show what was said (the first text is saved at once).
        The same write tells whether Stop was pressed on another replica."""
        while True:
            await changed.wait()
            changed.clear()
            try:
                if await self.store.checkpoint_reply(reply_id, reply_to_json(state.snapshot())):
                    log.info("reply %s: Stop was requested on another replica", reply_id)
                    on_stop_requested()
                    return
            except Exception as exc:  # a missed checkpoint only makes recovery show less
                log.warning("could not checkpoint reply %s: %s", reply_id, exc)
            await asyncio.sleep(self.checkpoint_interval)

    # -- leases ----------------------------------------------------------------------------

    def _lease_end(self) -> datetime:
        return datetime.now(UTC) + self.lease

    def _hold(self, reply_id: int) -> None:
        """Renew this reply's lease until `_let_go`; the renewal task runs while anything is held."""
        self._held.add(reply_id)
        if self._leases is None or self._leases.done():
            self._leases = asyncio.create_task(self._renew_leases(), name="reply leases")

    def _let_go(self, reply_id: int, thread: ThreadKey | None = None) -> None:
        self._held.discard(reply_id)
        self._lost.discard(reply_id)
        if thread is not None and (event := self._turns.pop(thread, None)) is not None:
            event.set()  # the thread's next local reply checks whether its turn has come

    def _lose(self, reply_ids: set[int]) -> None:
        """These replies are another replica's now: stop streaming them, stop waiting for them."""
        for reply_id in reply_ids:
            self._lost.add(reply_id)
            task = self._streams.get(reply_id)
            if task is not None:
                task.cancel()
        for event in self._turns.values():
            event.set()

    async def _renew_leases(self) -> None:
        """Every third of the lease: extend what this relay holds, notice what it lost, pass on
        Stops requested elsewhere, and settle replies a database outage left unfinished."""
        while self._held or self._unsettled:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            await self._settle()
            held = set(self._held)
            if not held:
                continue
            try:
                renewed = await self.store.renew_leases(self.owner, self._lease_end())
            except Exception as exc:  # the lease may lapse; then another replica takes over
                log.warning("could not renew the leases of %d replies: %s", len(held), exc)
                continue
            lost = (held & self._held) - renewed.keys()
            if lost:
                log.warning("replies %s were taken over by another replica", sorted(lost))
                self._lose(lost)
            for reply_id, stop in renewed.items():
                if stop and self.stop(reply_id):
                    log.info("reply %s: Stop was requested on another replica", reply_id)

    async def _finish_or_later(self, reply_id: int, status: str, error_code: str) -> None:
        try:
            await self.store.finish_reply(reply_id, status, error_code=error_code, owner=self.owner)
        except Exception as exc:
            log.warning("could not finish reply %s yet (will retry): %s", reply_id, exc)
            self._unsettled.setdefault(reply_id, (status, error_code))

    async def _settle(self) -> None:
        for reply_id, (status, error_code) in list(self._unsettled.items()):
            try:
                await self.store.finish_reply(reply_id, status, error_code=error_code or None, owner=self.owner)
            except StoreUnavailable:
                return
            except Exception as exc:
                log.warning("could not settle reply %s: %s", reply_id, exc)
            del self._unsettled[reply_id]

    # -- taking over from dead replicas -------------------------------------------------

    async def keep_recovering(
        self, platform: str, surface_for: Callable[[ThreadKey], Surface], stop: asyncio.Event
    ) -> None:
        """`recover` now and then every third of the lease, until `stop` is set. Adapters run
        this while connected, so a dead replica's replies are finished within about a lease."""
        interval = self.lease.total_seconds() / 3
        while not stop.is_set():
            try:
                await self.recover(platform, surface_for)
            except StoreUnavailable as exc:
                log.warning("could not look for replies left by other replicas: %s", exc)
            except Exception:
                log.exception("looking for replies left by other replicas failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def recover(self, platform: str, surface_for: Callable[[ThreadKey], Surface]) -> int:
        """Take over this platform's unfinished replies whose lease ran out (their replica died).

        A reply that was streaming gets its last checkpointed text, tools and sources back,
        marked interrupted with a line on how to ask again (one that never showed a message
        gets one). A reply still queued is answered here, in its thread's order, in the
        background. `surface_for` gives the surface for a thread. Returns how many were taken.
        """
        if not self.accepting:
            return 0
        taken = 0
        for record in await self.store.take_over_expired(platform, self.owner, self._lease_end()):
            if record.id in self._held:
                continue  # our own, alive: its renewal had only been late
            taken += 1
            if record.status is ReplyStatus.QUEUED and record.inbound:
                self._adopt(record, surface_for(record.key))
                continue
            self._hold(record.id)
            try:
                await self._finalize_interrupted(record, surface_for(record.key))
            finally:
                self._let_go(record.id, record.key)
        return taken

    def _adopt(self, record: ReplyRecord, surface: Surface) -> None:
        """Answer a queued message whose replica died, as if it had arrived here."""
        data = record.inbound or {}
        inbound = Inbound(
            record.key,
            str(data.get("user", "")),
            str(data.get("text", "")),
            record.inbound_event_id,
            bool(data.get("from_bot", False)),
        )
        self._hold(record.id)
        log.info("reply %s in %s: its replica stopped before answering; answering it here", record.id, record.key)

        async def answer() -> ReplyOutcome:
            try:
                earlier = await self.store.earlier_unfinished(record.key, record.id)
                return await self._answer_in_turn(inbound, surface, record.id, earlier)
            except StoreUnavailable as exc:
                self._let_go(record.id, record.key)
                log.error("database unavailable while answering taken-over reply %s: %s", record.id, exc)
                return await self.say(surface, record.key, DATABASE_DOWN_TEXT)

        task = asyncio.create_task(answer(), name=f"taken-over reply {record.id}")
        self._adopted.add(task)
        task.add_done_callback(self._adopted.discard)

    async def _finalize_interrupted(self, record: ReplyRecord, surface: Surface) -> None:
        reply = reply_from_json(record.checkpoint) if record.checkpoint else Reply()
        state = ReplyState.from_reply(reply)
        state.finish(ReplyStatus.INTERRUPTED, INTERRUPTED_NOTICE)
        writer = ReplyWriter(
            surface, record.key, state, self.budgets, StableSplitter(surface.limits.max_text).split, metrics=self.metrics
        )
        await writer.resume([MessageRef.from_stored(record.key, stored) for stored in record.message_ids])
        try:
            await asyncio.wait_for(writer.finish(), FINAL_FLUSH_TIMEOUT * 2)
        except TimeoutError:
            await writer.cancel()
            log.warning("reply %s in %s: could not show that it was interrupted", record.id, record.key)
        known = set(record.message_ids)
        for message in writer.messages:
            if message.stored() not in known:
                await self.store.add_reply_message(record.id, message.stored())
        await self.store.finish_reply(record.id, ReplyStatus.INTERRUPTED.value, owner=self.owner)
        log.info("reply %s in %s was left unfinished by a stopped replica; finalized as interrupted", record.id, record.key)

    async def _bound_agent(self, thread: ThreadKey) -> str | None:
        binding = await self.store.get_binding(thread.platform, thread.workspace, thread.channel)
        if binding is not None:
            return binding.agent_id
        return self.settings.agent_default_id

    async def _pump(
        self,
        thread: ThreadKey,
        agent_id: str,
        text: str,
        state: ReplyState,
        writer: ReplyWriter,
        changed: asyncio.Event,
    ) -> None:
        """Feed upstream events into the state; store the conversation id the moment it is known."""
        conversation_id = state.conversation_id
        async for event in self._events(thread, agent_id, text, conversation_id, state):
            version, trace_id = state.version, state.trace_id
            state.apply(event)
            if state.trace_id != trace_id:
                bind_log_fields(trace_id=state.trace_id)
            if state.version != version:
                writer.notify()
                changed.set()
            if isinstance(event, ConversationStarted) and event.conversation_id != conversation_id:
                if await self._save_conversation_id(thread, event.conversation_id):
                    conversation_id = event.conversation_id
        if state.conversation_id and state.conversation_id != conversation_id:
            await self._save_conversation_id(thread, state.conversation_id)  # new, or not saved yet

    async def _save_conversation_id(self, thread: ThreadKey, conversation_id: str) -> bool:
        """Store the id at once; if the database is down the answer goes on (and it is tried again at the end)."""
        try:
            await self.store.set_conversation_id(thread, conversation_id)
            return True
        except StoreUnavailable as exc:
            log.error("could not store conversation %s of %s yet: %s", conversation_id, thread, exc)
            return False

    async def _events(
        self,
        thread: ThreadKey,
        agent_id: str,
        text: str,
        conversation_id: str | None,
        state: ReplyState,
    ) -> AsyncIterator[AgentEvent]:
        """The agent's events; a vanished upstream conversation is replaced by a new one, once."""
        async for event in self.agent.stream(agent_id, text, conversation_id):
            if (
                isinstance(event, Failed)
                and event.failure.code is FailureCode.CONVERSATION_NOT_FOUND
                and conversation_id is not None
                and not state.text
            ):
                log.info("conversation %s vanished upstream; starting a new one", conversation_id)
                await self.store.forget_conversation_id(thread)
                state.conversation_id = None
                state.notice = NEW_CONVERSATION_NOTICE
                async for retry_event in self.agent.stream(agent_id, text, None):
                    yield retry_event
                return
            yield event

    async def _interrupted(
        self,
        writer: ReplyWriter,
        reply_id: int,
        state: ReplyState,
        thread: ThreadKey,
        saving: asyncio.Task[None] | None,
    ) -> None:
        """We are being cancelled (shutdown): show "interrupted" instead of a working indicator, briefly."""
        writer.notify()
        try:
            await asyncio.wait_for(writer.finish(), FINAL_FLUSH_TIMEOUT)
        except Exception as exc:  # a timeout or a platform error: nothing may stop the persist below
            log.warning("could not show the interruption of reply %s in %s: %r", reply_id, thread, exc)
            await writer.cancel()
        await self._persist(reply_id, state, thread, saving)

    async def _persist(
        self, reply_id: int, state: ReplyState, thread: ThreadKey, saving: asyncio.Task[None] | None
    ) -> None:
        if saving is not None:
            results = await asyncio.gather(saving, return_exceptions=True)
            if isinstance(results[0], Exception):
                log.error("could not record a message id of reply %s: %s", reply_id, results[0])
        usage = dataclasses.asdict(state.usage) if state.usage else None
        error_code = state.error.display_code if state.error else None
        try:
            finished = await self.store.finish_reply(
                reply_id,
                state.status.value,
                trace_id=state.trace_id,
                conversation_id=state.conversation_id,
                usage=usage,
                error_code=error_code,
                owner=self.owner,
            )
        except StoreUnavailable as exc:  # the answer is visible; its row is finished once the database is back
            log.error("could not persist reply %s in %s: %s", reply_id, thread, exc)
            self._unsettled[reply_id] = (state.status.value, error_code or "")
            return
        if not finished:
            log.warning("reply %s in %s had been taken over by another replica before it finished", reply_id, thread)
            return
        log.info(
            "reply %s in %s finished: %s (trace %s)", reply_id, thread, state.status.value, state.trace_id
        )
