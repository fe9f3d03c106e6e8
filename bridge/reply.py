"""The platform-neutral reply: what adapters render.

`ReplyState` is the relay's mutable accumulator (cheap appends); `Reply` is the frozen
snapshot taken when an edit is about to go out, so a render never sees a half-applied event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge.events import (
    AgentEvent,
    Completed,
    ConversationStarted,
    Failed,
    Source,
    SourcesFound,
    TextDelta,
    ToolCalled,
    ToolReturned,
    Usage,
)
from bridge.failures import AgentFailure, FailureCode


class ReplyStatus(StrEnum):
    QUEUED = "queued"
    """Stored only: accepted, waiting for earlier replies of its thread (never rendered)."""
    STREAMING = "streaming"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self is not ReplyStatus.STREAMING and self is not ReplyStatus.QUEUED


class ToolStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    input: Any = None
    output: Any = None
    status: ToolStatus = ToolStatus.RUNNING


@dataclass(frozen=True, slots=True)
class Reply:
    """A frozen snapshot of one reply, as adapters render it."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    sources: tuple[Source, ...] = ()
    error: AgentFailure | None = None
    status: ReplyStatus = ReplyStatus.STREAMING
    # Bookkeeping that is not shown on its own (a trace id is shown with its error, which does
    # compare): excluded from equality, so the writer never spends an edit when only they change.
    usage: Usage | None = field(default=None, compare=False)
    conversation_id: str | None = field(default=None, compare=False)
    trace_id: str | None = field(default=None, compare=False)
    notice: str | None = None
    """A core-written line shown under the text (e.g. "stopped", "interrupted", "new conversation")."""


@dataclass(frozen=True, slots=True)
class MessagePart:
    """One platform message of a reply: a slice of the text, plus the reply's extras on the last part."""

    reply: Reply
    text: str
    index: int
    is_last: bool

    @property
    def working(self) -> bool:
        """Show a working indicator: the reply is still streaming and this is its newest part."""
        return self.is_last and self.reply.status is ReplyStatus.STREAMING


@dataclass(slots=True)
class ReplyState:
    """Accumulates agent events. `version` grows on every visible change."""

    chunks: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    sources: tuple[Source, ...] = ()
    error: AgentFailure | None = None
    status: ReplyStatus = ReplyStatus.STREAMING
    usage: Usage | None = None
    conversation_id: str | None = None
    trace_id: str | None = None
    notice: str | None = None
    version: int = 0
    _text_cache: str = ""
    _cached_chunks: int = 0

    @property
    def text(self) -> str:
        if self._cached_chunks != len(self.chunks):
            self._text_cache = "".join(self.chunks)
            self.chunks[:] = [self._text_cache] if self._text_cache else []
            self._cached_chunks = len(self.chunks)
        return self._text_cache

    def apply(self, event: AgentEvent) -> None:
        """Fold one upstream event into the state."""
        match event:
            case ConversationStarted(conversation_id=cid, trace_id=tid):
                self.conversation_id = cid
                self.trace_id = tid or self.trace_id
                return  # invisible
            case TextDelta(text=t):
                if not t:
                    return
                self.chunks.append(t)
            case SourcesFound(sources=s):
                self.sources = self.sources + s
            case ToolCalled(name=n, input=i):
                self.tool_calls.append(ToolCall(n, i))
            case ToolReturned(name=n, output=o, failed=f):
                self._tool_returned(n, o, f)
            case Completed() as done:
                self._complete(done)
            case Failed(failure=f):
                self.error = f
                self.trace_id = f.trace_id or self.trace_id
                self.status = ReplyStatus.FAILED
                self._settle_tools(ToolStatus.FAILED)
        self.version += 1

    def _tool_returned(self, name: str, output: Any, failed: bool) -> None:
        status = ToolStatus.FAILED if failed else ToolStatus.DONE
        for i, call in enumerate(self.tool_calls):
            if call.name == name and call.status is ToolStatus.RUNNING:
                self.tool_calls[i] = ToolCall(call.name, call.input, output, status)
                return
        self.tool_calls.append(ToolCall(name, None, output, status))

    def _complete(self, done: Completed) -> None:
        self.conversation_id = done.conversation_id or self.conversation_id
        self.trace_id = done.trace_id or self.trace_id
        self.usage = done.usage or self.usage
        if done.text is not None and not self.text:
            # Dialects that deliver the full text only in `done` (or the non-streaming fallback).
            self.chunks.append(done.text)
        self.status = ReplyStatus.DONE
        self._settle_tools(ToolStatus.DONE)

    def _settle_tools(self, status: ToolStatus) -> None:
        self.tool_calls = [
            ToolCall(c.name, c.input, c.output, status) if c.status is ToolStatus.RUNNING else c
            for c in self.tool_calls
        ]

    def finish(self, status: ReplyStatus, notice: str | None = None) -> None:
        """End the reply from the core's side (stopped by a user, interrupted by shutdown)."""
        self.status = status
        self.notice = notice
        self._settle_tools(ToolStatus.DONE if status is ReplyStatus.DONE else ToolStatus.FAILED)
        self.version += 1

    @classmethod
    def from_reply(cls, reply: Reply) -> ReplyState:
        """Continue from a snapshot (e.g. a crash-recovery checkpoint)."""
        return cls(
            chunks=[reply.text] if reply.text else [],
            tool_calls=list(reply.tool_calls),
            sources=reply.sources,
            error=reply.error,
            status=reply.status,
            usage=reply.usage,
            conversation_id=reply.conversation_id,
            trace_id=reply.trace_id,
            notice=reply.notice,
        )

    def snapshot(self) -> Reply:
        return Reply(
            text=self.text,
            tool_calls=tuple(self.tool_calls),
            sources=self.sources,
            error=self.error,
            status=self.status,
            usage=self.usage,
            conversation_id=self.conversation_id,
            trace_id=self.trace_id,
            notice=self.notice,
        )


def reply_to_json(reply: Reply) -> dict[str, Any]:
    """A reply as plain JSON: the `chat --json` output and the crash-recovery checkpoint."""
    error = None
    if reply.error is not None:
        e = reply.error
        error = {
            "code": e.display_code,
            "kind": e.code.value,
            "upstream_code": e.upstream_code,
            "message": e.user_message,
            "hint": e.admin_hint,
            "detail": e.detail,
            "http_status": e.http_status,
            "trace_id": e.trace_id,
        }
    return {
        "status": reply.status.value,
        "text": reply.text,
        "tool_calls": [
            {"name": c.name, "input": c.input, "output": c.output, "status": c.status.value}
            for c in reply.tool_calls
        ],
        "sources": [dataclasses.asdict(s) for s in reply.sources],
        "error": error,
        "notice": reply.notice,
        "conversation_id": reply.conversation_id,
        "trace_id": reply.trace_id,
        "usage": dataclasses.asdict(reply.usage) if reply.usage else None,
    }


def reply_from_json(data: Mapping[str, Any]) -> Reply:
    """The inverse of `reply_to_json` (user sentences and hints come from the failure code)."""
    error = None
    if data.get("error"):
        e = data["error"]
        kind = e.get("kind")
        code = FailureCode(kind) if kind in FailureCode._value2member_map_ else FailureCode.INTERNAL
        error = AgentFailure.of(
            code,
            upstream_code=e.get("upstream_code"),
            detail=e.get("detail"),
            http_status=e.get("http_status"),
            trace_id=e.get("trace_id"),
        )
    return Reply(
        text=data.get("text") or "",
        tool_calls=tuple(
            ToolCall(c["name"], c.get("input"), c.get("output"), ToolStatus(c.get("status", "running")))
            for c in data.get("tool_calls") or ()
        ),
        sources=tuple(Source(**s) for s in data.get("sources") or ()),
        error=error,
        status=ReplyStatus(data.get("status", ReplyStatus.STREAMING.value)),
        usage=Usage(**data["usage"]) if data.get("usage") else None,
        conversation_id=data.get("conversation_id"),
        trace_id=data.get("trace_id"),
        notice=data.get("notice"),
    )
