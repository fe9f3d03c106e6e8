"""The use case: one inbound chat message becomes one streamed, persisted reply.

inbound → de-duplicate → wait for the thread's lane (messages of one thread are answered in
order) → choose agent and conversation → placeholder → stream → scheduled edits → final
edit → persist. Platform details stay behind the `Surface`; upstream details behind the
agent client's event union.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

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
from bridge.store import StoreUnavailable
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

    @property
    def ok(self) -> bool:
        return self.reply is not None and self.reply.status is ReplyStatus.DONE


class ThreadLanes:
    """One FIFO lock per thread, dropped when nobody holds or waits for it."""

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
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.agent = agent
        self.settings = settings
        self.budgets = budgets or Budgets()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.checkpoint_interval = checkpoint_interval
        self.metrics = metrics or Metrics()  # a private registry when nobody scrapes (tests, benchmarks)
        self.lanes = ThreadLanes()
        self.bot_turns = BotTurns()
        self.accepting = True
        self._interrupting = False
        self._streams: dict[int, asyncio.Task[None]] = {}
        self._by_thread: dict[ThreadKey, int] = {}
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
            self._answering += 1
            self._idle.clear()
            try:
                with log_context(
                    platform=thread.platform, workspace=thread.workspace, channel=thread.channel, thread=thread.thread
                ):
                    return await self._answer(inbound, surface)
            finally:
                self._answering -= 1
                if self._answering == 0:
                    self._idle.set()

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

    def stop(self, reply_id: int) -> bool:
        """Cancel a streaming reply (a user pressed Stop). True when one was running."""
        task = self._streams.get(reply_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def stop_thread(self, thread: ThreadKey) -> bool:
        reply_id = self._by_thread.get(thread)
        return reply_id is not None and self.stop(reply_id)

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

    async def _answer(self, inbound: Inbound, surface: Surface) -> ReplyOutcome:
        thread = inbound.thread
        conversation = await self.store.get_conversation(thread)
        agent_id = conversation.agent_id if conversation else await self._bound_agent(thread)
        if agent_id is None:
            hint = getattr(surface, "bind_hint", DEFAULT_BIND_HINT).format(
                platform=thread.platform, workspace=thread.workspace, channel=thread.channel
            )
            return await self.say(
                surface,
                thread,
                f"This channel is not bound to an agent yet — an admin can bind it with `{hint}`.",
            )
        if conversation is None:
            conversation = await self.store.start_conversation(thread, agent_id)

        reply_id = await self.store.create_reply(
            thread, agent_id, inbound_event_id=inbound.event_id, owner=self.owner
        )
        bind_log_fields(reply_id=reply_id, agent_id=agent_id)
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
        checkpoints = asyncio.create_task(self._checkpoints(reply_id, state, changed))
        watch = self.metrics.reply_started()
        try:
            try:
                await writer.start()
            except (DeliveryFailed, MessageGone) as exc:
                log.error("could not post a reply in %s, so the agent was not asked: %s", thread, exc)
                state.finish(ReplyStatus.FAILED)
                await self.store.finish_reply(reply_id, ReplyStatus.FAILED.value, error_code="delivery_failed")
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

    async def _checkpoints(self, reply_id: int, state: ReplyState, changed: asyncio.Event) -> None:
        """Save the reply's state soon after it changes, then at most every `checkpoint_interval`,
        so a restart after a crash can show what was said (the first text is saved at once)."""
        while True:
            await changed.wait()
            changed.clear()
            try:
                await self.store.update_reply(reply_id, checkpoint=reply_to_json(state.snapshot()))
            except Exception as exc:  # a missed checkpoint only makes recovery show less
                log.warning("could not checkpoint reply %s: %s", reply_id, exc)
            await asyncio.sleep(self.checkpoint_interval)

    async def recover(self, platform: str, surface_for: Callable[[ThreadKey], Surface]) -> int:
        """Finalize this platform's replies that a crashed process left streaming.

        Each gets its last checkpointed text, tools and sources back, marked interrupted with
        a line on how to ask again; a reply that never showed a message gets one.
        `surface_for` gives the surface for a thread. Returns how many were finalized.
        """
        finalized = 0
        for record in await self.store.unfinished_replies():
            if record.key.platform != platform or record.owner == self.owner:
                continue
            row_surface = surface_for(record.key)
            reply = reply_from_json(record.checkpoint) if record.checkpoint else Reply()
            state = ReplyState.from_reply(reply)
            state.finish(ReplyStatus.INTERRUPTED, INTERRUPTED_NOTICE)
            writer = ReplyWriter(
                row_surface, record.key, state, self.budgets, StableSplitter(row_surface.limits.max_text).split,
                metrics=self.metrics,
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
            await self.store.finish_reply(record.id, ReplyStatus.INTERRUPTED.value)
            finalized += 1
            log.info("reply %s in %s was left streaming by a crash; finalized as interrupted", record.id, record.key)
        return finalized

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
        try:
            await self.store.finish_reply(
                reply_id,
                state.status.value,
                trace_id=state.trace_id,
                conversation_id=state.conversation_id,
                usage=usage,
                error_code=state.error.display_code if state.error else None,
            )
        except StoreUnavailable as exc:  # the answer is visible; only its bookkeeping is lost
            log.error("could not persist reply %s in %s: %s", reply_id, thread, exc)
            return
        log.info(
            "reply %s in %s finished: %s (trace %s)", reply_id, thread, state.status.value, state.trace_id
        )
