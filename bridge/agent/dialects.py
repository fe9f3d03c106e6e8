"""Every upstream dialect's quirks, translated into the one `AgentEvent` union.

Request shapes (paths, auth headers, body fields) and the parsing of stream events, error
bodies and the non-streaming reply live here and nowhere else. The parser is deliberately
lenient: it accepts any dialect's event types in either mode where the meaning is
unambiguous, ignores unknown types and fields, and skips (with a warning) a malformed
event instead of failing the whole reply.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.config import Dialect
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
from bridge.redact import redact

log = logging.getLogger("bridge.agent")

DETAIL_LIMIT = 300
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_THINNEST_ID = re.compile(r"^ag_[A-Za-z0-9_]+$")


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP request to the agent API, before the base URL is applied."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    streaming: bool = True


def validate_agent_id(dialect: Dialect, agent_id: str) -> str | None:
    """A sentence saying why `agent_id` can't be right for `dialect`, or None."""
    if dialect is Dialect.THINNEST:
        if _THINNEST_ID.match(agent_id or ""):
            return None
        return (
            f"“{agent_id}” is not a thinnest agent id: it should look like `ag_` followed by "
            "letters, digits and underscores (e.g. ag_c47e7c97_b2f2)."
        )
    if _UUID.match(agent_id or ""):
        return None
    return (
        f"“{agent_id}” is not a SentientOne agent id: it should be a UUID like "
        "a1b2c3d4-e5f6-7890-abcd-ef1234567890 (see the agent card on the Agents page)."
    )


def stream_request(
    dialect: Dialect, *, api_key: str, agent_id: str, message: str, session_id: str | None
) -> UpstreamRequest:
    """The streaming request; `session_id` is the conversation id (thinnest: always set)."""
    if dialect is Dialect.THINNEST:
        return UpstreamRequest(
            "/chat/stream",
            {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            {"agent_id": agent_id, "message": message, "session_id": session_id},
        )
    return _sentientone("/v1/chat/stream", api_key, agent_id, message, session_id, streaming=True)


def chat_request(
    *, api_key: str, agent_id: str, message: str, conversation_id: str | None
) -> UpstreamRequest:
    """SentientOne's non-streaming `POST /v1/chat`, the fallback on Starter plans."""
    return _sentientone("/v1/chat", api_key, agent_id, message, conversation_id, streaming=False)


def _sentientone(
    path: str, api_key: str, agent_id: str, message: str, conversation_id: str | None, *, streaming: bool
) -> UpstreamRequest:
    body: dict[str, Any] = {"message": message}
    if conversation_id:
        body["conversation_id"] = conversation_id
    headers = {"X-Api-Key": api_key, "X-Agent-Id": agent_id, "Content-Type": "application/json"}
    return UpstreamRequest(path, headers, body, streaming)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an error response body says, whatever its shape."""

    code: str | None = None
    message: str | None = None
    trace_id: str | None = None


def read_error_body(text: str) -> ErrorBody:
    """Finds code/message/trace id in `{code,message}`, `{error:{…}}`, `{detail}` or plain text."""
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return ErrorBody(message=text.strip() or None)
    inner = data.get("error")
    if isinstance(inner, dict):
        data = {**data, **inner}
        inner = None
    code = _str(data.get("code")) or _str(data.get("error_code")) or _str(inner)
    message = _str(data.get("message")) or _str(data.get("detail"))
    if message is None and isinstance(data.get("detail"), (list, dict)):
        message = json.dumps(data["detail"])[:DETAIL_LIMIT]
    if message is None and code is None:
        message = text.strip() or None
    return ErrorBody(code, message, _str(data.get("trace_id")))


def clean_detail(text: str | None, secrets: Iterable[str]) -> str | None:
    """Redacted first, then shortened, so a cut can never leave half a key behind."""
    if not text:
        return None
    text = " ".join(redact(text, secrets).split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


@dataclass(slots=True)
class StreamParser:
    """Turns one stream's SSE events into `AgentEvent`s, remembering ids across events.

    `conversation_id` starts as the id the client already announced (thinnest's session id)
    or None; a conversation id is announced (`ConversationStarted`) the first time it is seen.
    """

    secrets: tuple[str, ...] = ()
    conversation_id: str | None = None
    trace_id: str | None = None
    announced: bool = False

    def feed(self, event_name: str, data: str) -> list[AgentEvent]:
        """Events for one SSE event; empty for keep-alives, unknown types and malformed data."""
        if not data.strip():
            return []
        try:
            payload = json.loads(data)
        except ValueError:
            log.warning(
                "agent stream: ignoring an event whose data is not JSON: %s",
                clean_detail(data, self.secrets)[:120],
            )
            return []
        if not isinstance(payload, dict):
            log.warning("agent stream: ignoring an event whose data is not a JSON object")
            return []
        kind = _str(payload.get("type")) or event_name or ""
        handler = _HANDLERS.get(kind)
        if handler is None:
            log.debug("agent stream: ignoring unknown event type %r", kind)
            return []
        return handler(self, payload)

    # --- one method per meaning; each accepts every dialect's spelling of it ---

    def learn(self, payload: dict[str, Any]) -> list[AgentEvent]:
        """Picks up ids from any event; announces a conversation id the first time."""
        self.trace_id = _str(payload.get("trace_id")) or self.trace_id
        cid = _str(payload.get("conversation_id")) or _str(payload.get("session_id"))
        message = payload.get("message")
        if cid is None and isinstance(message, dict):
            cid = _str(message.get("conversation_id"))
        if cid and (not self.announced or cid != self.conversation_id):
            self.conversation_id, self.announced = cid, True
            return [ConversationStarted(cid, self.trace_id)]
        return []

    def announce(self, conversation_id: str) -> ConversationStarted:
        """For the client: a conversation id it chose itself (thinnest sessions)."""
        self.conversation_id, self.announced = conversation_id, True
        return ConversationStarted(conversation_id, self.trace_id)

    def _sources(self, payload: dict[str, Any]) -> list[AgentEvent]:
        raw = payload.get("sources")
        sources = tuple(s for s in map(_source, raw if isinstance(raw, list) else []) if s)
        return [*self.learn(payload), *([SourcesFound(sources)] if sources else [])]

    def _text(self, payload: dict[str, Any]) -> list[AgentEvent]:
        content = payload.get("content", payload.get("text"))
        return [TextDelta(content)] if isinstance(content, str) and content else []

    def _tool_call(self, payload: dict[str, Any]) -> list[AgentEvent]:
        tool_input = payload.get("input", payload.get("args", payload.get("arguments")))
        return [ToolCalled(_str(payload.get("name")) or "tool", tool_input)]

    def _tool_result(self, payload: dict[str, Any]) -> list[AgentEvent]:
        return [_tool_returned(payload)]

    def _done(self, payload: dict[str, Any]) -> list[AgentEvent]:
        events = self.learn(payload)
        message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
        for calls in (payload.get("tool_calls"), message.get("tool_calls")):
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict) and ("output" in call or "result" in call):
                    events.append(_tool_returned(call))
        usage = _usage(payload.get("usage"), message.get("token_count", payload.get("token_count")))
        content = message.get("content")
        events.append(
            Completed(
                conversation_id=self.conversation_id,
                trace_id=self.trace_id,
                message_id=_str(message.get("id")) or _str(payload.get("message_id")),
                text=content if isinstance(content, str) else None,
                usage=usage,
            )
        )
        return events

    def _error(self, payload: dict[str, Any]) -> list[AgentEvent]:
        self.trace_id = _str(payload.get("trace_id")) or self.trace_id
        inner = payload.get("error")
        body = {**payload, **inner} if isinstance(inner, dict) else payload
        message = _str(body.get("message")) or _str(body.get("detail")) or _str(inner)
        failure = AgentFailure.of(
            FailureCode.STREAM_ERROR,
            upstream_code=clean_detail(_str(body.get("code")), self.secrets),
            detail=clean_detail(message, self.secrets),
            trace_id=self.trace_id,
        )
        return [Failed(failure)]


_HANDLERS = {
    "start": StreamParser.learn,
    "meta": StreamParser.learn,
    "sources": StreamParser._sources,
    "delta": StreamParser._text,
    "text": StreamParser._text,
    "tool_call": StreamParser._tool_call,
    "tool_result": StreamParser._tool_result,
    "done": StreamParser._done,
    "error": StreamParser._error,
}


def parse_chat_reply(payload: Any, parser: StreamParser) -> list[AgentEvent]:
    """SentientOne's `POST /v1/chat` JSON reply, as the events its stream would have sent."""
    if not isinstance(payload, dict) or not isinstance(payload.get("message"), dict):
        failure = AgentFailure.of(
            FailureCode.PROTOCOL_ERROR,
            detail="the /v1/chat reply has no message object",
            trace_id=parser.trace_id,
        )
        return [Failed(failure)]
    events = parser.learn(payload)
    message = payload["message"]
    for call in payload.get("tool_calls") or []:
        if isinstance(call, dict):
            events.append(ToolCalled(_str(call.get("name")) or "tool", call.get("input", call.get("args"))))
            events.append(_tool_returned(call))
    content = message.get("content")
    if isinstance(content, str) and content:
        events.append(TextDelta(content))
    events.append(
        Completed(
            conversation_id=parser.conversation_id,
            trace_id=parser.trace_id,
            message_id=_str(message.get("id")),
            text=content if isinstance(content, str) else None,
            usage=_usage(None, message.get("token_count")),
        )
    )
    return events


def _tool_returned(call: dict[str, Any]) -> ToolReturned:
    output = call.get("output", call.get("result"))
    failed = bool(call.get("is_error")) or call.get("status") in {"error", "failed"}
    return ToolReturned(_str(call.get("name")) or "tool", output, failed)


def _source(raw: Any) -> Source | None:
    if not isinstance(raw, dict):
        return None
    title = _str(raw.get("title")) or _str(raw.get("url")) or _str(raw.get("id")) or "source"
    return Source(
        title=title,
        url=_str(raw.get("url")),
        id=_str(raw.get("id")),
        index=_int(raw.get("index")),
        source_type=_str(raw.get("source_type")),
        score=_float(raw.get("score")),
        snippet=_str(raw.get("snippet")),
    )


def _usage(usage: Any, token_count: Any) -> Usage | None:
    if isinstance(usage, dict):
        result = Usage(
            total_tokens=_int(usage.get("total_tokens")),
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
        )
        if result.total_tokens is None and None not in (result.input_tokens, result.output_tokens):
            result = Usage(
                result.input_tokens + result.output_tokens, result.input_tokens, result.output_tokens
            )  # type: ignore[operator]
        return result
    total = _int(token_count)
    return Usage(total_tokens=total) if total is not None else None


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
