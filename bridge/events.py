"""The upstream agent stream as one closed union of frozen events.

Every dialect (SentientOne `start`/`done{message}`, SentientOne `meta`/`sources`/`done`,
thinnest `text`/`tool_call{args}`/`tool_result`/`done{usage}`) is parsed into these types;
nothing downstream of the parser knows which dialect produced them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from bridge.failures import AgentFailure


@dataclass(frozen=True, slots=True)
class Source:
    """One retrieval source the agent consulted."""

    title: str
    url: str | None = None
    id: str | None = None
    index: int | None = None
    source_type: str | None = None
    score: float | None = None
    snippet: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage; SentientOne reports only a total (`token_count`)."""

    total_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ConversationStarted:
    """The upstream conversation id is known: store it at once."""

    conversation_id: str
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class SourcesFound:
    sources: tuple[Source, ...]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A chunk of reply text to append."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCalled:
    name: str
    input: Any = None


@dataclass(frozen=True, slots=True)
class ToolReturned:
    """A tool's output; matched to the oldest pending call of the same name."""

    name: str
    output: Any = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Completed:
    """The stream finished normally. `text` is the upstream's full text when it sends one."""

    conversation_id: str | None = None
    trace_id: str | None = None
    message_id: str | None = None
    text: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The stream (or the request) failed; the text received so far stays valid."""

    failure: AgentFailure


AgentEvent: TypeAlias = (
    ConversationStarted | SourcesFound | TextDelta | ToolCalled | ToolReturned | Completed | Failed
)
"""Closed union: `match` over these seven types is exhaustive."""
