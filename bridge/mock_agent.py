"""A local stand-in for the agent API, speaking every dialect the client understands.

It exists so the bridge can be demonstrated and tested end to end without an account:
replies are generated deterministically from the message text, streamed with realistic
timing, and keywords in the message trigger the behaviours worth seeing (tools, sources,
errors, drops, HTTP failures). Endpoints:

- ``POST /v1/chat/stream`` — SentientOne SSE. Default: the current generation
  (``meta`` / ``sources`` / ``delta`` / ``done{conversation_id, trace_id}``). The older
  generation (``start`` / ``delta`` / ``tool_call`` / ``done{message}``) is sent when the
  request has ``X-Mock-Generation: 1`` or the agent id starts with ``00000000``.
- ``POST /v1/chat`` — SentientOne non-streaming JSON (the Starter-plan fallback).
- ``POST /chat/stream`` — thinnest SSE (``text`` / ``tool_call`` / ``tool_result`` /
  ``done{usage}`` / ``error{message}``).

Auth is checked as each real API does: SentientOne wants ``X-Api-Key`` (an
``Authorization: Bearer`` header instead gets 401), thinnest wants ``Authorization: Bearer``.
Any non-empty key passes unless the app was created with ``expected_key``; a wrong key
gets a 401 whose message echoes the key, as careless real services do (the client must
redact it). Every response carries ``X-Trace-Id``.

Keywords (case-insensitive, anywhere in the message) — see ``MOCK_TRIGGERS``:

- ``tool`` — a tool call with its input, then its output, then the answer.
- ``sources`` — a ``sources`` event (current SentientOne generation only).
- ``error`` — an ``error`` event mid-stream, after some text.
- ``long`` — a multi-paragraph reply over 5,000 characters, with a code block.
- ``slow`` — slower deltas, with ``:`` keep-alive comments between them.
- ``drop`` — the connection is cut mid-stream, without a ``done`` event.
- ``markdown`` — bold, italics, a list, inline code and a code block.
- ``fail:401|402|403|404|429|500`` — answer that HTTP status instead (403 is
  ``plan_upgrade_required`` on the stream endpoint, so the client falls back to
  ``/v1/chat``, which then answers normally; 429 carries ``Retry-After: 1``).
- ``help`` — the reply lists these keywords.

Conversations (SentientOne ``conversation_id``, thinnest ``session_id``) are remembered per
app instance: a follow-up says which message number it is and quotes the first one. An
unknown SentientOne ``conversation_id`` gets 404 ``conversation_not_found``; thinnest, like
the real one, starts a fresh session for an id it has not seen.

``error`` and ``drop`` only apply to the streaming endpoints. ``tool`` emits a ``tool_call``
event in both SentientOne generations (the current one's docs show none; clients must cope)
and puts the outputs in ``done`` (``done.tool_calls``, older generation ``done.message.tool_calls``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from aiohttp import web

log = logging.getLogger("bridge.mock_agent")

MOCK_TRIGGERS: Mapping[str, str] = MappingProxyType(
    {
        "tool": "a tool call with its input, then its output, then the answer",
        "sources": "a sources event with two retrieval sources (SentientOne only)",
        "error": "an error event mid-stream, after some text",
        "long": "a multi-paragraph reply over 5,000 characters with a code block",
        "slow": "slow deltas with keep-alive comments between them",
        "drop": "the connection is cut mid-stream, without a done event",
        "markdown": "bold, italics, a list, inline code and a code block",
        "fail:401|402|403|404|429|500": (
            "answer that HTTP status (403 = plan_upgrade_required: the client falls back to /v1/chat)"
        ),
        "help": "list these keywords",
    }
)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_THINNEST_ID = re.compile(r"^ag_[A-Za-z0-9_]+$")
_FAIL = re.compile(r"fail:(\d{3})")
_TOOL = {
    "name": "get_order",
    "input": {"order_id": "ORD-1234"},
    "output": '{"status":"shipped","carrier":"FedEx","tracking":"FX-998877"}',
}
_SOURCES = [
    {
        "index": 0,
        "id": "doc-shipping",
        "title": "Shipping policy",
        "url": "https://example.com/shipping",
        "source_type": "web",
        "score": 0.91,
        "snippet": "Orders ship within two business days.",
    },
    {
        "index": 1,
        "id": "doc-returns",
        "title": "Returns and refunds",
        "url": "https://example.com/returns",
        "source_type": "kb",
        "score": 0.74,
        "snippet": "Returns are accepted for 30 days.",
    },
]


@dataclass(frozen=True, slots=True)
class MockOptions:
    """How the mock behaves; `create_app(**options)` takes these as keywords."""

    expected_key: str | None = None
    first_token_delay: float = 0.15
    delta_delay: float = 0.03
    slow_delta_delay: float = 0.4
    starter_plan: bool = False
    """When true every stream request gets 403 plan_upgrade_required (a Starter account)."""


@dataclass(slots=True)
class MockState:
    """Per-app memory: message history by conversation id (and thinnest session id)."""

    conversations: dict[str, list[str]] = field(default_factory=dict)
    sessions: dict[str, list[str]] = field(default_factory=dict)


OPTIONS = web.AppKey("mock_options", MockOptions)
STATE = web.AppKey("mock_state", MockState)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one reply will contain, derived only from the message and its history."""

    before_tool: str
    text: str
    tool: bool
    sources: bool
    error: bool
    drop: bool
    slow: bool


def _has(message: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", message.lower()) is not None


def _compose(message: str, history: list[str]) -> _Plan:
    """The reply to `message`, given the conversation so far (which includes `message`)."""
    quoted = " ".join(message.split())
    quoted = quoted if len(quoted) <= 80 else quoted[:79] + "…"
    turn = len(history)
    parts = [f"You said: “{quoted}”."]
    if turn > 1:
        first = " ".join(history[0].split())[:60]
        parts.append(f"This is message #{turn} of our conversation; your first message was “{first}”.")
    else:
        parts.append("This is message #1 of a new conversation.")
    tool = _has(message, "tool")
    sources = _has(message, "sources")
    if tool:
        parts.append("Order ORD-1234 has shipped with FedEx, tracking number FX-998877.")
    if sources:
        parts.append("According to the shipping policy [1], orders ship within two business days [2].")
    if _has(message, "markdown"):
        parts.append(
            "Here is some **bold text**, some _italics_ and `inline code`:\n\n"
            "- a first item\n- a second item with **emphasis**\n- a third item\n\n"
            '```python\nprint("hello from the mock agent")\n```'
        )
    if _has(message, "help"):
        parts.append(
            "Try these keywords: " + "; ".join(f"`{k}` ({v})" for k, v in MOCK_TRIGGERS.items()) + "."
        )
    if _has(message, "long"):
        parts.append(_long_text())
    return _Plan(
        before_tool="Let me look that up. " if tool else "",
        text="\n\n".join(parts) if any("\n" in p for p in parts) else " ".join(parts),
        tool=tool,
        sources=sources,
        error=_has(message, "error"),
        drop=_has(message, "drop"),
        slow=_has(message, "slow"),
    )


def _long_text() -> str:
    paragraph = (
        "Streaming replies arrive as many small deltas, and the bridge edits a single chat "
        "message in place while they arrive. When a reply outgrows the platform's message "
        "limit it is split into several messages at paragraph boundaries, and code blocks are "
        "closed and reopened so each part still renders correctly. "
    )
    paragraphs = [f"Part {i}. " + paragraph * 2 for i in range(1, 12)]
    code = "```python\n" + "\n".join(f"def step_{i}(x):\n    return x * {i}\n" for i in range(1, 9)) + "```"
    return "\n\n".join(paragraphs[:6] + [code] + paragraphs[6:])


def _chunks(text: str) -> list[str]:
    """Word-aligned deltas; at most about 80 of them, so long replies stream in seconds."""
    size = max(12, len(text) // 80)
    out: list[str] = []
    current = ""
    for word in re.findall(r"\S+\s*|\s+", text):
        current += word
        if len(current) >= size:
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# --- request checks -------------------------------------------------------------------------


def _json_error(status: int, trace: str, headers: dict[str, str] | None = None, **body: Any) -> web.Response:
    return web.json_response(body, status=status, headers={"X-Trace-Id": trace, **(headers or {})})


def _sentientone_refusal(request: web.Request, trace: str) -> web.Response | None:
    options = request.app[OPTIONS]
    key = request.headers.get("X-Api-Key", "")
    if not key:
        if request.headers.get("Authorization"):
            return _json_error(
                401,
                trace,
                code="invalid_api_key",
                message="Authorization headers are not supported: send your key in X-Api-Key.",
            )
        return _json_error(401, trace, code="missing_api_key", message="The X-Api-Key header is required.")
    if options.expected_key is not None and key != options.expected_key:
        return _json_error(401, trace, code="invalid_api_key", message=f"Invalid API key: {key}")
    agent = request.headers.get("X-Agent-Id", "")
    if not agent:
        return _json_error(400, trace, code="missing_agent_id", message="The X-Agent-Id header is required.")
    if not _UUID.match(agent):
        return _json_error(404, trace, code="agent_not_found", message=f"Agent {agent} not found.")
    return None


def _fail_trigger(message: str, trace: str, *, thinnest: bool, streaming: bool) -> web.Response | None:
    match = _FAIL.search(message.lower())
    if not match:
        return None
    status = int(match.group(1))
    if status == 403 and not streaming:
        return None  # the plan allows the non-streaming endpoint: that's the fallback
    code, text = {
        400: ("invalid_request", "The request was rejected (mock)."),
        401: ("invalid_api_key", "Invalid API key (mock)."),
        402: ("insufficient_balance", "Insufficient balance: top up your account (mock)."),
        403: ("plan_upgrade_required", "Streaming requires the Pro plan (mock)."),
        404: ("agent_not_found", "Agent not found (mock)."),
        429: ("rate_limited", "Too many requests (mock)."),
    }.get(status, ("internal_error", f"The mock answered {status} as asked."))
    headers = {"Retry-After": "1"} if status == 429 else None
    if thinnest:
        return _json_error(status, trace, headers, detail=code if status == 403 else text)
    return _json_error(status, trace, headers, code=code, message=text)


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


# --- SSE writing ----------------------------------------------------------------------------


class _Sse:
    """Writes SSE frames; `alive` turns false once the client has gone."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.alive = True

    async def send(self, payload: dict[str, Any]) -> None:
        await self._write(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n")

    async def comment(self, text: str = "keep-alive") -> None:
        await self._write(f": {text}\n\n")

    async def _write(self, text: str) -> None:
        if not self.alive:
            return
        try:
            await self.response.write(text.encode("utf-8"))
        except (ConnectionError, RuntimeError):
            self.alive = False


async def _open_sse(request: web.Request, trace: str) -> _Sse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Trace-Id": trace}
    )
    await response.prepare(request)
    sse = _Sse(response)
    await sse.comment("stream open")
    return sse


async def _stream_text(sse: _Sse, plan: _Plan, options: MockOptions, text_type: str, *, cut: bool) -> bool:
    """Sends the deltas; with `cut`, stops a third of the way in. Returns whether it stopped early."""
    delay = options.slow_delta_delay if plan.slow else options.delta_delay
    chunks = _chunks(plan.text)
    stop_at = max(1, len(chunks) // 3) if cut else len(chunks)
    for chunk in chunks[:stop_at]:
        if not sse.alive:
            return True
        await sse.send({"type": text_type, "content": chunk})
        await asyncio.sleep(delay / 2)
        if plan.slow:
            await sse.comment()
        await asyncio.sleep(delay / 2)
    return stop_at < len(chunks)


async def _drop(request: web.Request) -> None:
    """Cuts the TCP connection without finishing the chunked body, like a network failure."""
    if request.transport is not None:
        request.transport.abort()
    await asyncio.sleep(0)


# --- handlers -------------------------------------------------------------------------------


async def _sentientone_stream(request: web.Request) -> web.StreamResponse:
    trace = _new_id("trace")
    options = request.app[OPTIONS]
    refusal = _sentientone_refusal(request, trace)
    if refusal is not None:
        return refusal
    if options.starter_plan:
        return _json_error(
            403, trace, code="plan_upgrade_required", message="Streaming requires the Pro plan."
        )
    prepared = await _prepare_sentientone(request, trace, streaming=True)
    if isinstance(prepared, web.Response):
        return prepared
    conversation_id, message, history = prepared
    plan = _compose(message, history)
    old = request.headers.get("X-Mock-Generation") == "1" or request.headers["X-Agent-Id"].startswith(
        "00000000"
    )

    await asyncio.sleep(options.first_token_delay)
    sse = await _open_sse(request, trace)
    if old:
        await sse.send({"type": "start", "conversation_id": conversation_id})
    else:
        await sse.send({"type": "meta", "conversation_id": conversation_id, "trace_id": trace})
        if plan.sources:
            await sse.send({"type": "sources", "sources": _SOURCES})
    if plan.before_tool:
        await sse.send({"type": "delta", "content": plan.before_tool})
    if plan.tool:
        await sse.send({"type": "tool_call", "name": _TOOL["name"], "input": _TOOL["input"]})
        await asyncio.sleep(options.first_token_delay)
    stopped = await _stream_text(sse, plan, options, "delta", cut=plan.error or plan.drop)
    if not sse.alive:
        return sse.response
    if stopped and plan.drop:
        await _drop(request)
        return sse.response
    if stopped and plan.error:
        error = {"type": "error", "code": "model_error"}  # the older generation sends only a code
        if not old:
            error |= {"message": "The model provider failed mid-answer (mock).", "trace_id": trace}
        await sse.send(error)
    else:
        tool_calls = [_TOOL] if plan.tool else []
        if old:
            saved = {
                "id": _new_id("msg"),
                "content": plan.before_tool + plan.text,
                "token_count": _tokens(message) + _tokens(plan.text),
            }
            await sse.send(
                {"type": "done", "message": saved | ({"tool_calls": tool_calls} if tool_calls else {})}
            )
        else:
            done: dict[str, Any] = {"type": "done", "conversation_id": conversation_id, "trace_id": trace}
            await sse.send(done | ({"tool_calls": tool_calls} if tool_calls else {}))
    await sse.response.write_eof()
    return sse.response


async def _sentientone_chat(request: web.Request) -> web.Response:
    trace = _new_id("trace")
    options = request.app[OPTIONS]
    refusal = _sentientone_refusal(request, trace)
    if refusal is not None:
        return refusal
    prepared = await _prepare_sentientone(request, trace, streaming=False)
    if isinstance(prepared, web.Response):
        return prepared
    conversation_id, message, history = prepared
    plan = _compose(message, history)
    await asyncio.sleep(options.first_token_delay)
    content = plan.before_tool + plan.text
    reply: dict[str, Any] = {
        "conversation_id": conversation_id,
        "message": {
            "id": _new_id("msg"),
            "conversation_id": conversation_id,
            "role": "assistant",
            "content": content,
            "token_count": _tokens(message) + _tokens(content),
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    if plan.tool:
        reply["tool_calls"] = [_TOOL]
    return web.json_response(reply, headers={"X-Trace-Id": trace})


async def _prepare_sentientone(
    request: web.Request, trace: str, *, streaming: bool
) -> web.Response | tuple[str, str, list[str]]:
    """Validates the body and records the message; a response means 'answer this instead'."""
    body = await _json_body(request)
    message = body.get("message") if body else None
    if not isinstance(message, str) or not message.strip():
        return _json_error(400, trace, code="invalid_request", message="`message` is required.")
    failure = _fail_trigger(message, trace, thinnest=False, streaming=streaming)
    if failure is not None:
        return failure
    conversations = request.app[STATE].conversations
    conversation_id = body.get("conversation_id") if body else None
    if conversation_id is not None:
        if not isinstance(conversation_id, str) or conversation_id not in conversations:
            return _json_error(
                404,
                trace,
                code="conversation_not_found",
                message=f"Conversation {conversation_id} not found.",
            )
    else:
        conversation_id = _new_id("conv")
    history = conversations.setdefault(conversation_id, [])
    history.append(message)
    return conversation_id, message, history


async def _thinnest_stream(request: web.Request) -> web.StreamResponse:
    trace = _new_id("trace")
    state, options = request.app[STATE], request.app[OPTIONS]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _json_error(401, trace, detail="Missing or invalid authentication")
    if options.expected_key is not None and token.strip() != options.expected_key:
        return _json_error(401, trace, detail=f"Invalid token: {token.strip()}")
    body = await _json_body(request)
    if body is None or not isinstance(body.get("message"), str) or not body["message"].strip():
        return _json_error(400, trace, detail="message is required")
    agent_id, message = body.get("agent_id"), body["message"]
    if not isinstance(agent_id, str) or not _THINNEST_ID.match(agent_id):
        return _json_error(404, trace, detail="Agent not found")
    failure = _fail_trigger(message, trace, thinnest=True, streaming=True)
    if failure is not None:
        return failure
    if options.starter_plan:
        return _json_error(403, trace, detail="plan_upgrade_required")
    session = body.get("session_id")
    session = session if isinstance(session, str) and session else _new_id("session")
    history = state.sessions.setdefault(session, [])
    history.append(message)
    plan = _compose(message, history)

    await asyncio.sleep(options.first_token_delay)
    sse = await _open_sse(request, trace)
    if plan.before_tool:
        await sse.send({"type": "text", "content": plan.before_tool})
    if plan.tool:
        await sse.send({"type": "tool_call", "name": _TOOL["name"], "args": _TOOL["input"]})
        await asyncio.sleep(options.first_token_delay)
        await sse.send({"type": "tool_result", "name": _TOOL["name"], "result": _TOOL["output"]})
    stopped = await _stream_text(sse, plan, options, "text", cut=plan.error or plan.drop)
    if not sse.alive:
        return sse.response
    if stopped and plan.drop:
        await _drop(request)
        return sse.response
    if stopped and plan.error:
        await sse.send({"type": "error", "message": "The model provider failed mid-answer (mock)."})
    else:
        input_tokens, output_tokens = _tokens(message), _tokens(plan.before_tool + plan.text)
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        await sse.send({"type": "done", "usage": usage})
    await sse.response.write_eof()
    return sse.response


def create_app(**options: Any) -> web.Application:
    """A fresh mock agent; keywords are `MockOptions` fields. All state lives on the app."""
    app = web.Application()
    app[OPTIONS] = MockOptions(**options)
    app[STATE] = MockState()
    app.router.add_post("/v1/chat/stream", _sentientone_stream)
    app.router.add_post("/v1/chat", _sentientone_chat)
    app.router.add_post("/chat/stream", _thinnest_stream)
    return app


@asynccontextmanager
async def running_mock_agent(host: str = "127.0.0.1", port: int = 0, **options: Any) -> AsyncIterator[str]:
    """Serves a fresh mock agent on `host:port` (0 = a free port) and yields its base URL."""
    runner = web.AppRunner(create_app(**options), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        display_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{display_host}:{bound_port}"
    finally:
        await runner.cleanup()


async def serve(host: str = "127.0.0.1", port: int = 8765, **options: Any) -> None:
    """Runs the mock agent until cancelled (the `agent-bridge mock-agent` command)."""
    async with running_mock_agent(host, port, **options) as url:
        log.info("mock agent listening on %s", url)
        await asyncio.Event().wait()
