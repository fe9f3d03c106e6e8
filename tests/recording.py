"""A recording adapter for relay tests: implements the Surface protocol and logs every call.

It is the adapter side of the boundary (not a mock of the core): it renders plain text,
keeps every message's latest content, and can refuse calls the way platforms do (429 with
Retry-After, a deleted message) so the relay's real scheduling is exercised.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.keys import MessageRef, ThreadKey
from bridge.reply import MessagePart
from bridge.surface import MessageExpired, MessageGone, Rate, RateLimited, Scope, StreamRefused, SurfaceLimits


@dataclass(frozen=True)
class Call:
    at: float
    op: str
    message_id: str
    payload: Any


@dataclass
class Enforcer:
    """Refuses calls beyond `limit` per `window` seconds (a platform's sliding window), with 429."""

    limit: int
    window: float
    recent: deque[float] = field(default_factory=deque)
    refused: int = 0

    def check(self, now: float, method: str) -> None:
        while self.recent and now - self.recent[0] >= self.window:
            self.recent.popleft()
        if len(self.recent) >= self.limit:
            self.refused += 1
            raise RateLimited(self.window - (now - self.recent[0]), method)
        self.recent.append(now)


class RecordingSurface:
    """A plain-text Surface that records post/edit/delete calls with loop timestamps."""

    def __init__(
        self,
        *,
        max_text: int = 4000,
        post: Rate = Rate(100, 100, Scope.CHANNEL),
        edit: Rate = Rate(100, 100, Scope.WORKSPACE),
        append: Rate | None = None,
        call_latency: float = 0.0,
        enforce_edits: Enforcer | None = None,
        platform: str = "recording",
    ) -> None:
        self.platform = platform
        self.limits = SurfaceLimits(max_text=max_text, post=post, edit=edit, append=append)
        self.calls: list[Call] = []
        self.messages: dict[str, MessagePart] = {}
        self.deleted: set[str] = set()
        self.gone: set[str] = set()
        self.expired: set[str] = set()
        self.fail_next_edits: list[BaseException] = []
        self.fail_next_posts: list[BaseException] = []
        self.call_latency = call_latency
        self.enforce_edits = enforce_edits
        self._ids = itertools.count(1)

    def render(self, part: MessagePart) -> MessagePart:
        return part

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def post(self, thread: ThreadKey, payload: MessagePart) -> MessageRef:
        started = self._now()  # calls are stamped when they are made (when the budget granted them)
        await asyncio.sleep(self.call_latency)
        if self.fail_next_posts:
            raise self.fail_next_posts.pop(0)
        message_id = f"m{next(self._ids)}"
        self.messages[message_id] = payload
        self.calls.append(Call(started, "post", message_id, payload))
        return MessageRef(thread, message_id)

    async def edit(self, message: MessageRef, payload: MessagePart) -> None:
        started = self._now()
        await asyncio.sleep(self.call_latency)
        if message.id in self.gone:
            raise MessageGone(f"message {message.id} was deleted")
        if message.id in self.expired:
            raise MessageExpired(f"message {message.id} can no longer be edited")
        if self.fail_next_edits:
            raise self.fail_next_edits.pop(0)
        if self.enforce_edits is not None:
            self.enforce_edits.check(started, "edit")
        self.messages[message.id] = payload
        self.calls.append(Call(started, "edit", message.id, payload))

    async def delete(self, message: MessageRef) -> None:
        self.deleted.add(message.id)
        self.calls.append(Call(self._now(), "delete", message.id, None))

    # -- what tests look at ------------------------------------------------------------------

    async def wait_for(self, condition: Callable[[], object], timeout: float = 10.0) -> None:
        """Poll until `condition()` holds; fail with a clear message after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)

    def posted(self) -> bool:
        return bool(self.ops("post"))

    def shows_text(self) -> bool:
        """Some agent text has been edited into a message (past the placeholder)."""
        return any(c.op == "edit" and c.payload.text for c in self.calls)

    def ops(self, op: str) -> list[Call]:
        return [c for c in self.calls if c.op == op]

    def texts(self, message_ids: list[str] | None = None) -> list[str]:
        ids = message_ids if message_ids is not None else list(self.messages)
        return [self.messages[i].text for i in ids]


class StreamingSurface(RecordingSurface):
    """Adds the optional native-stream capability; can refuse it mid-way like Slack does."""

    def __init__(
        self, *, refuse_after_appends: int | None = None, fail_start: Exception | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.refuse_after_appends = refuse_after_appends
        self.fail_start = fail_start
        """Raised by the first start_stream (a 429, a 5xx…), as the platform would."""
        self.streams: dict[str, str] = {}
        self.stopped: set[str] = set()

    def wants_native_stream(self, thread: ThreadKey) -> bool:
        return True

    async def start_stream(self, thread: ThreadKey) -> MessageRef:
        if self.fail_start is not None:
            failure, self.fail_start = self.fail_start, None
            raise failure
        message_id = f"m{next(self._ids)}"
        self.streams[message_id] = ""
        self.calls.append(Call(self._now(), "start_stream", message_id, None))
        return MessageRef(thread, message_id)

    async def append_stream(self, message: MessageRef, text: str) -> None:
        appends = len(self.ops("append_stream"))
        if self.refuse_after_appends is not None and appends >= self.refuse_after_appends:
            raise StreamRefused("message_not_in_streaming_state")
        self.streams[message.id] += text
        self.calls.append(Call(self._now(), "append_stream", message.id, text))

    async def stop_stream(self, message: MessageRef, payload: MessagePart) -> None:
        self.stopped.add(message.id)
        self.messages[message.id] = payload
        self.calls.append(Call(self._now(), "stop_stream", message.id, payload))
