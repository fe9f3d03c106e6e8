"""Shared rate budgets: token buckets with priorities, fair FIFO grants and 429 penalties.

Every platform call goes through the bucket of its scope (Slack `chat.update`: the workspace;
Discord edits: the channel), so concurrent replies share one budget instead of each keeping
its own timer. Waiters are served by priority, then in arrival order: a reply re-queues at the
back after each grant, which makes the sharing round-robin and starvation-free.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field
from enum import IntEnum

from bridge.keys import ThreadKey
from bridge.surface import Rate, Scope


class Priority(IntEnum):
    """Lower goes first. First visible text jumps the queue; a finished reply's final state
    comes next; routine edits last. Only routine edits leave the reserve token."""

    URGENT = 0
    FINAL = 1
    NORMAL = 2


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class TokenBucket:
    """`rate.per_second` tokens a second, at most `rate.burst` saved up.

    Normal-priority callers leave one token in reserve when the burst allows it, so a new
    reply's first text or a finished reply's final edit rarely waits behind routine edits.
    """

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._loop = asyncio.get_running_loop()
        self._tokens = float(rate.burst)
        self._stamp = self._loop.time()
        self._blocked_until = 0.0
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.granted = 0
        self.penalties = 0

    @property
    def _reserve(self) -> float:
        return 1.0 if self.rate.burst > 1 else 0.0

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(
                float(self.rate.burst), self._tokens + (now - self._stamp) * self.rate.per_second
            )
            self._stamp = now

    def _needed(self, priority: int) -> float:
        return 1.0 + (self._reserve if priority >= Priority.NORMAL else 0.0)

    def _try_take(self, priority: int) -> bool:
        now = self._loop.time()
        if now < self._blocked_until:
            return False
        self._refill(now)
        if self._tokens >= self._needed(priority):
            self._tokens -= 1.0
            self.granted += 1
            return True
        return False

    async def acquire(self, priority: Priority = Priority.NORMAL) -> None:
        """Wait for a token. Cancellation-safe: a cancelled waiter takes nothing."""
        if not self._waiters and self._try_take(priority):
            return
        waiter = _Waiter(int(priority), next(self._seq), self._loop.create_future())
        heapq.heappush(self._waiters, waiter)
        self._serve()
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self._tokens += 1.0  # granted just as we were cancelled: give it back
                self.granted -= 1
                self._serve()
            raise

    def penalize(self, retry_after: float) -> None:
        """The platform answered 429: spend everything and block until `Retry-After` passes."""
        self.penalties += 1
        now = self._loop.time()
        self._blocked_until = max(self._blocked_until, now + max(0.0, retry_after))
        self._tokens = 0.0
        self._stamp = self._blocked_until
        if self._waiters:
            self._serve()

    def _serve(self) -> None:
        """Grant tokens to queued waiters in order; re-arm one timer for the next grant."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():  # cancelled while queued
                heapq.heappop(self._waiters)
                continue
            if not self._try_take(head.priority):
                self._timer = self._loop.call_later(self._delay(head.priority), self._serve)
                return
            heapq.heappop(self._waiters)
            head.future.set_result(None)

    def _delay(self, priority: int) -> float:
        now = self._loop.time()
        if now < self._blocked_until:
            return self._blocked_until - now
        missing = self._needed(priority) - self._tokens
        return max(missing / self.rate.per_second, 0.001)


class Budgets:
    """The buckets of one process, keyed by platform, operation and the rate's scope."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}

    @staticmethod
    def key(platform: str, operation: str, rate: Rate, thread: ThreadKey, message_id: str = "") -> tuple[str, ...]:
        match rate.scope:
            case Scope.GLOBAL:
                scope: tuple[str, ...] = ()
            case Scope.WORKSPACE:
                scope = (thread.workspace,)
            case Scope.CHANNEL:
                scope = (thread.workspace, thread.channel)
            case Scope.MESSAGE:
                scope = (thread.workspace, thread.channel, message_id)
        return (platform, operation, *scope)

    def bucket(
        self, platform: str, operation: str, rate: Rate, thread: ThreadKey, message_id: str = ""
    ) -> TokenBucket:
        key = self.key(platform, operation, rate, thread, message_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate)
        return bucket

    def forget_message(self, platform: str, message_id: str) -> None:
        """Drop per-message buckets once a reply is final, so memory stays flat."""
        for key in [k for k in self._buckets if k[0] == platform and k[-1] == message_id and len(k) == 5]:
            del self._buckets[key]

    def stats(self) -> dict[str, int]:
        return {
            "buckets": len(self._buckets),
            "granted": sum(b.granted for b in self._buckets.values()),
            "penalties": sum(b.penalties for b in self._buckets.values()),
        }
