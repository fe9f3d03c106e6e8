"""Edit scheduling: keeps one reply's platform messages in step with its state.

One writer task per reply, so a message never has two edits in flight and an older edit can
never land after a newer one. The writer always sends the *latest* render, taken after the
budget granted the call, so intermediate states are skipped for free. The first visible text
and the final state go out with urgent priority; a 429 spends the shared bucket until its
Retry-After and the same (by then newer) state is sent again, so no text is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.budget import Budgets, Priority, TokenBucket
from bridge.keys import MessageRef, ThreadKey
from bridge.metrics import Metrics
from bridge.reply import MessagePart, Reply, ReplyState, ReplyStatus
from bridge.surface import (
    AccessDenied,
    MessageExpired,
    MessageGone,
    NativeStream,
    RateLimited,
    StreamRefused,
    Surface,
    SurfaceError,
)

log = logging.getLogger("bridge.scheduler")

T = TypeVar("T")

Splitter = Callable[[str], list[str]]
"""Returns the text's message-sized parts; parts already returned earlier must stay stable."""

_FROZEN_PART = Reply(status=ReplyStatus.DONE)
"""What a non-last part carries: its text is final and it shows no extras."""

_MAX_SURFACE_FAILURES = 4
"""Platform errors in a row (other than 429) before a call is given up."""
_MAX_RATE_LIMITED = 100
"""429s in a row before a call is given up; each one already waited its Retry-After."""


class DeliveryFailed(Exception):
    """The platform kept refusing a call that waiting can't fix."""


@dataclass(slots=True)
class WriterStats:
    posts: int = 0
    edits: int = 0
    appends: int = 0
    rate_limited: int = 0
    first_text_at: float | None = None
    """When the state first had text (the upstream's first delta), on the loop's clock."""
    first_visible_at: float | None = None
    final_visible_at: float | None = None


class ReplyWriter:
    """Drives post/edit (or a native stream) for one reply until its final state is visible."""

    def __init__(
        self,
        surface: Surface,
        thread: ThreadKey,
        state: ReplyState,
        budgets: Budgets,
        splitter: Splitter,
        *,
        on_posted: Callable[[MessageRef], None] | None = None,
        on_gone: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.surface = surface
        self.thread = thread
        self.state = state
        self.budgets = budgets
        self.splitter = splitter
        self.messages: list[MessageRef] = []
        self.stats = WriterStats()
        self.gone = False
        self.failure: BaseException | None = None
        self._on_posted = on_posted
        self._on_gone = on_gone
        self._metrics = metrics
        """Counts every platform call and 429 by core operation; None (tests, benchmarks) counts nothing."""
        self._sent: list[MessagePart | None] = []
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        """Set once the reply is finished: a routine request still queued for the budget is then
        made again as final (it has become the final edit) instead of waiting for the reserve."""
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._native = (
            isinstance(surface, NativeStream) and surface.wants_native_stream(thread)
        )
        self._appended = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Show the placeholder (or open the native stream) before the agent is even asked."""
        placeholder = MessagePart(self.state.snapshot(), "", 0, True)
        if self._native:
            try:
                await self._budget("stream_control").acquire(Priority.URGENT)
                self._count("stream_start")
                message = await self.surface.start_stream(self.thread)  # type: ignore[attr-defined]
                await self._adopt(message, placeholder)
            except StreamRefused as exc:
                log.info("native stream refused at start (%s); using edits", exc)
                self._native = False
            except RateLimited as exc:  # the placeholder goes out as a plain post instead
                self._rate_limited(self._budget("stream_control"), exc, "stream_start")
                self._native = False
            except SurfaceError as exc:  # e.g. a 5xx: the plain post has its own retries
                log.info("native stream failed to start (%r); using edits", exc)
                self._native = False
        if not self._native:
            await self._post(placeholder)
        self._task = self._loop.create_task(self._run(), name=f"reply-writer {self.thread}")

    async def resume(self, messages: list[MessageRef]) -> None:
        """Take over messages posted earlier (by a process that died) and bring them up to date."""
        self._native = False
        self.messages = list(messages)
        self._sent = [None] * len(messages)
        self._task = self._loop.create_task(self._run(), name=f"reply-writer {self.thread}")
        self.notify()

    def notify(self) -> None:
        """The state changed; the writer will catch up when the budget allows."""
        if self.stats.first_text_at is None and self.state.chunks:
            self.stats.first_text_at = self._loop.time()
        self._wake.set()
        if self.state.status.finished:
            self._finished.set()

    async def finish(self) -> None:
        """Wait until the final state is visible (or delivery became impossible)."""
        self._wake.set()
        if self.state.status.finished:
            self._finished.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # -- the loop --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                finished_version = self.state.version if self.state.status.finished else None
                await self._catch_up()
                if finished_version is not None and finished_version == self.state.version:
                    if self.stats.final_visible_at is None:
                        self.stats.final_visible_at = self._loop.time()
                    return
        except MessageGone as exc:
            log.info("reply message gone in %s: %s", self.thread, exc)
            self.gone = True
            if self._on_gone is not None:
                self._on_gone()
        except DeliveryFailed as exc:
            log.warning("giving up on delivering a reply in %s: %s", self.thread, exc)
            self.failure = exc
        finally:
            for message in self.messages:
                self.budgets.forget_message(self.surface.platform, message.id)

    async def _catch_up(self) -> None:
        """Send calls until every message shows the latest state."""
        while True:
            if self._native:
                if await self._native_step():
                    continue
                if self._native:
                    return
            parts = self._parts(self.state.snapshot())
            index = next(
                (i for i, part in enumerate(parts) if i >= len(self._sent) or self._sent[i] != part),
                None,
            )
            if index is None:
                return
            if index >= len(self.messages):
                await self._post(parts[index])
            else:
                await self._edit(index)

    def _parts(self, reply: Reply) -> list[MessagePart]:
        texts = self.splitter(reply.text) or [""]
        last = len(texts) - 1
        return [
            MessagePart(reply if i == last else _FROZEN_PART, text, i, i == last)
            for i, text in enumerate(texts)
        ]

    # -- platform calls ----------------------------------------------------------------

    def _budget(self, operation: str, message_id: str = "") -> TokenBucket:
        rate = getattr(self.surface.limits, operation) or self.surface.limits.post
        return self.budgets.bucket(self.surface.platform, operation, rate, self.thread, message_id)

    async def _call(
        self,
        bucket: TokenBucket,
        priority: Callable[[], Priority],
        attempt: Callable[[], Awaitable[T]],
        what: str,
    ) -> T:
        """One platform call through its budget: 429s are waited out (the bucket is emptied
        until Retry-After), other platform errors retried with backoff; what waiting cannot fix
        (`AccessDenied`, too many failures) becomes `DeliveryFailed`. `attempt` renders the
        latest state itself, after the budget granted the call."""
        failures = limited = 0
        while failures < _MAX_SURFACE_FAILURES and limited < _MAX_RATE_LIMITED:
            await self._acquire(bucket, priority)
            try:
                return await attempt()
            except RateLimited as exc:
                self._rate_limited(bucket, exc, what)
                limited += 1
            except AccessDenied as exc:
                raise DeliveryFailed(str(exc)) from exc
            except (MessageGone, MessageExpired, StreamRefused):
                raise
            except SurfaceError as exc:
                await self._backoff(failures, exc)
                failures += 1
        raise DeliveryFailed(f"{what} kept failing")

    async def _acquire(self, bucket: TokenBucket, priority: Callable[[], Priority]) -> None:
        """A token at `priority()`. A routine request still queued when the reply finishes is
        withdrawn and made again at the (now final) priority, so the final state neither waits
        for the reserve token routine requests leave nor behind other replies' routine edits
        (measured: a lone Slack reply's final edit waited 987 ms after `done`; see
        docs/PERFORMANCE.md). First texts still go before finals."""
        wanted = priority()
        if wanted is not Priority.NORMAL or self._finished.is_set():
            await bucket.acquire(wanted)
            return
        routine = asyncio.ensure_future(bucket.acquire(wanted))
        finished = asyncio.ensure_future(self._finished.wait())
        try:
            await asyncio.wait((routine, finished), return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            if not routine.done():
                routine.cancel()  # cancellation-safe: a cancelled waiter takes nothing
        try:
            await routine
            return  # granted as routine (possibly just as the reply finished)
        except asyncio.CancelledError:
            if not self._finished.is_set():
                raise  # we ourselves are being cancelled
        await bucket.acquire(priority())

    async def _post(self, part: MessagePart, *, replace: bool = False) -> None:
        """Post a part as a new message (or, with `replace`, instead of an uneditable one)."""

        async def attempt() -> MessageRef:
            nonlocal part
            if part.index > 0 or part.text or replace:  # not the placeholder: send the latest state
                part = self._parts(self.state.snapshot())[part.index]
            self._count("post")
            return await self.surface.post(self.thread, self.surface.render(part))

        message = await self._call(self._budget("post"), lambda: Priority.URGENT, attempt, "post")
        self.stats.posts += 1
        if replace:
            self.messages[part.index] = message
            self._sent[part.index] = part
            if self._on_posted is not None:
                self._on_posted(message)
        else:
            await self._adopt(message, part)

    async def _adopt(self, message: MessageRef, part: MessagePart) -> None:
        self.messages.append(message)
        self._sent.append(part)
        self._mark_visible(part)
        if self._on_posted is not None:
            self._on_posted(message)

    async def _edit(self, index: int) -> None:
        message = self.messages[index]
        shown: MessagePart | None = None

        async def attempt() -> None:
            nonlocal shown
            shown = None
            parts = self._parts(self.state.snapshot())
            if index >= len(parts) or self._sent[index] == parts[index]:
                return  # nothing left to say here (the state moved on while we waited)
            shown = parts[index]
            self._count("edit")
            await self.surface.edit(message, self.surface.render(shown))

        def priority() -> Priority:
            sent = self._sent[index] if index < len(self._sent) else None
            if sent is None or not sent.text:
                return Priority.URGENT  # the first visible text
            return Priority.FINAL if self.state.status.finished else Priority.NORMAL

        try:
            await self._call(self._budget("edit", message.id), priority, attempt, "edit")
        except MessageExpired as exc:
            log.info("message %s can no longer be edited (%s); continuing in a new one", message.id, exc)
            await self._post(self._parts(self.state.snapshot())[index], replace=True)
            return
        if shown is not None:
            self.stats.edits += 1
            self._sent[index] = shown
            self._mark_visible(shown)

    async def _native_step(self) -> bool:
        """One native-stream call; True when a call was made. Leaves native mode when it must."""
        reply = self.state.snapshot()
        message = self.messages[0]
        stream: Any = self.surface
        operation = "stream_control"
        try:
            if reply.status.finished or len(reply.text) > self.surface.limits.max_text:
                self._native = False
                parts = self._parts(reply)
                await self._budget("stream_control").acquire(Priority.URGENT)
                self._count("stream_stop")
                await stream.stop_stream(message, self.surface.render(parts[0]))
                self._sent[0] = parts[0]
                self._mark_visible(parts[0])
                return True
            pending = reply.text[self._appended :]
            if not pending:
                return False
            operation = "append"
            if self.surface.limits.append is not None:
                await self._budget("append").acquire(
                    Priority.URGENT if self._appended == 0 else Priority.NORMAL
                )
            pending = self.state.text[self._appended :]
            self._count("stream_append")
            await stream.append_stream(message, pending)
            self._appended += len(pending)
            self.stats.appends += 1
            self._sent[0] = MessagePart(reply, self.state.text[: self._appended], 0, True)
            self._mark_visible(self._sent[0])
            return True
        except RateLimited as exc:
            method = "stream_append" if operation == "append" else "stream_stop"
            self._rate_limited(self._budget(operation), exc, method)
            return True
        except StreamRefused as exc:
            log.info("native stream ended by the platform (%s); continuing with edits", exc)
            self._native = False
            self._sent[0] = None
            return True

    def _mark_visible(self, part: MessagePart) -> None:
        if part.text and self.stats.first_visible_at is None:
            self.stats.first_visible_at = self._loop.time()

    def _count(self, method: str) -> None:
        """One platform call is going out (`method`: the core operation, see bridge/metrics.py)."""
        if self._metrics is not None:
            self._metrics.platform_call(self.surface.platform, method)

    def _rate_limited(self, bucket: TokenBucket, exc: RateLimited, method: str) -> None:
        self.stats.rate_limited += 1
        if self._metrics is not None:
            self._metrics.rate_limited(self.surface.platform, method)
        log.info("platform 429 on %s; waiting %.2fs", exc.method or "a call", exc.retry_after)
        bucket.penalize(exc.retry_after)

    async def _backoff(self, attempt: int, exc: SurfaceError) -> None:
        delay = min(0.25 * 2**attempt, 4.0)
        log.warning("platform call failed (%s); retrying in %.2fs", exc, delay)
        await asyncio.sleep(delay)
