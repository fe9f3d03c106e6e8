"""AgentClient against real local servers: every dialect, every failure, retries, fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import aiohttp
import pytest

from bridge.agent import AgentClient
from bridge.agent.retry import backoff_delay, parse_retry_after
from bridge.events import (
    Completed,
    ConversationStarted,
    Failed,
    SourcesFound,
    TextDelta,
    ToolCalled,
    ToolReturned,
    Usage,
)
from bridge.failures import FailureCode
from bridge.mock_agent import running_mock_agent
from tests.agent_fakes import (
    API_KEY,
    SO_AGENT,
    SO_OLD_AGENT,
    THIN_AGENT,
    RawConnection,
    RecordingSleep,
    collect,
    raw_server,
    scripted_agent,
    settings_for,
    sse,
    sse_frame,
    status,
    text_of,
)

FAST = {"first_token_delay": 0.0, "delta_delay": 0.0}


@pytest.fixture
async def mock_url():
    async with running_mock_agent(**FAST) as url:
        yield url


def client_for(url: str, dialect: str = "sentientone", *, sleep=None, **overrides) -> AgentClient:
    return AgentClient(
        settings_for(url, dialect, **overrides),
        sleep=sleep or RecordingSleep(),
        session_ids=lambda: "session-fixed-1",
    )


def terminal(events) -> list:
    return [e for e in events if isinstance(e, (Completed, Failed))]


def failure_of(events):
    assert isinstance(events[-1], Failed), events
    assert len(terminal(events)) == 1
    return events[-1].failure


# --- dialects against the mock agent ---------------------------------------------------------


async def test_sentientone_current_generation(mock_url):
    async with client_for(mock_url) as client:
        events = await collect(client, SO_AGENT, "hello tool sources")
    started = events[0]
    assert isinstance(started, ConversationStarted) and started.conversation_id.startswith("conv-")
    assert started.trace_id and started.trace_id.startswith("trace-")
    sources = next(e for e in events if isinstance(e, SourcesFound))
    assert [s.title for s in sources.sources] == ["Shipping policy", "Returns and refunds"]
    assert sources.sources[0].score == 0.91 and sources.sources[0].index == 0
    assert ToolCalled("get_order", {"order_id": "ORD-1234"}) in events
    returned = next(e for e in events if isinstance(e, ToolReturned))
    assert returned.name == "get_order" and "FedEx" in returned.output
    assert "message #1" in text_of(events)
    done = events[-1]
    assert isinstance(done, Completed) and len(terminal(events)) == 1
    assert done.conversation_id == started.conversation_id and done.trace_id == started.trace_id


async def test_sentientone_old_generation_by_agent_id_and_header(mock_url):
    async with client_for(mock_url) as client:
        by_id = await collect(client, SO_OLD_AGENT, "tool please")
    async with aiohttp.ClientSession(headers={"X-Mock-Generation": "1"}) as http:
        client = AgentClient(settings_for(mock_url), http=http)
        by_header = await collect(client, SO_AGENT, "tool please")
    for events in (by_id, by_header):
        assert isinstance(events[0], ConversationStarted)
        done = events[-1]
        assert isinstance(done, Completed) and done.message_id and done.message_id.startswith("msg-")
        assert done.text == text_of(events)
        assert done.usage and done.usage.total_tokens and done.usage.total_tokens > 0
        assert isinstance(events[-2], ToolReturned)  # from done.message.tool_calls
        assert not any(isinstance(e, SourcesFound) for e in events)


async def test_sentientone_conversation_continues(mock_url):
    async with client_for(mock_url) as client:
        first = await collect(client, SO_AGENT, "remember the alamo")
        cid = first[0].conversation_id
        second = await collect(client, SO_AGENT, "and now?", cid)
    assert second[0] == ConversationStarted(cid, second[0].trace_id)
    assert "message #2" in text_of(second) and "remember the alamo" in text_of(second)
    assert second[-1].conversation_id == cid


async def test_thinnest_dialect(mock_url):
    async with client_for(mock_url, "thinnest") as client:
        events = await collect(client, THIN_AGENT, "use a tool")
        again = await collect(client, THIN_AGENT, "second", "session-fixed-1")
    assert events[0] == ConversationStarted("session-fixed-1", events[0].trace_id)
    assert events[0].trace_id and events[0].trace_id.startswith("trace-")
    i = events.index(ToolCalled("get_order", {"order_id": "ORD-1234"}))
    assert isinstance(events[i + 1], ToolReturned) and "FedEx" in events[i + 1].output
    done = events[-1]
    assert isinstance(done, Completed) and done.conversation_id == "session-fixed-1"
    assert done.usage and done.usage.input_tokens and done.usage.output_tokens
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    assert "message #2" in text_of(again)


async def test_request_shapes_per_dialect():
    async with scripted_agent([sse({"type": "done"})]) as agent:
        async with client_for(agent.url) as client:
            await collect(client, SO_AGENT, "hi")
            await collect(client, SO_AGENT, "again", "conv-1")
        async with client_for(agent.url, "thinnest") as client:
            await collect(client, THIN_AGENT, "hi")
            await collect(client, THIN_AGENT, "again", "sess-7")
    so_new, so_cont, thin_new, thin_cont = agent.requests
    assert so_new.path == "/v1/chat/stream"
    assert so_new.headers["X-Api-Key"] == API_KEY and so_new.headers["X-Agent-Id"] == SO_AGENT
    assert so_new.headers["Accept"] == "text/event-stream" and "Authorization" not in so_new.headers
    assert so_new.body == {"message": "hi"}
    assert so_cont.body == {"message": "again", "conversation_id": "conv-1"}
    assert thin_new.path == "/chat/stream" and thin_new.headers["Authorization"] == f"Bearer {API_KEY}"
    assert "X-Api-Key" not in thin_new.headers
    assert thin_new.body == {"agent_id": THIN_AGENT, "message": "hi", "session_id": "session-fixed-1"}
    assert thin_cont.body["session_id"] == "sess-7"


async def test_default_session_ids_are_fresh_uuid_hex():
    async with scripted_agent([sse({"type": "done"})]) as agent:
        async with AgentClient(settings_for(agent.url, "thinnest")) as client:
            a = await collect(client, THIN_AGENT, "x")
            b = await collect(client, THIN_AGENT, "y")
    ids = [a[0].conversation_id, b[0].conversation_id]
    assert ids[0] != ids[1] and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


async def test_mixed_dialect_events_are_understood():
    """Either mode accepts the other dialects' spellings where the meaning is unambiguous."""
    mixed = sse(
        {"type": "start", "conversation_id": "c1"},
        {"type": "text", "content": "a"},
        {"type": "delta", "content": "b"},
        {"type": "tool_call", "name": "t", "args": {"q": 1}},
        {"type": "tool_result", "name": "t", "result": "r"},
        {"type": "future_event", "x": 1},
        {
            "type": "done",
            "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            "new_field": True,
        },
    )
    async with scripted_agent([mixed]) as agent:
        async with client_for(agent.url) as client:
            events = await collect(client, SO_AGENT, "x")
    assert events == [
        ConversationStarted("c1"),
        TextDelta("a"),
        TextDelta("b"),
        ToolCalled("t", {"q": 1}),
        ToolReturned("t", "r"),
        Completed(conversation_id="c1", usage=Usage(3, 1, 2)),
    ]


async def test_done_tool_outputs_in_both_places_and_trace_header():
    done = {
        "type": "done",
        "tool_calls": [{"name": "a", "input": {}, "output": "A"}],
        "message": {
            "id": "m1",
            "content": "hi",
            "token_count": 7,
            "tool_calls": [{"name": "b", "output": "B"}],
        },
    }
    answer = sse(
        {"type": "meta", "conversation_id": "c9"},
        {"type": "delta", "content": "hi"},
        done,
        headers={"X-Trace-Id": "tr-header"},
    )
    async with scripted_agent([answer]) as agent:
        async with client_for(agent.url) as client:
            events = await collect(client, SO_AGENT, "x")
    assert events == [
        ConversationStarted("c9", "tr-header"),
        TextDelta("hi"),
        ToolReturned("a", "A"),
        ToolReturned("b", "B"),
        Completed("c9", "tr-header", "m1", "hi", Usage(total_tokens=7)),
    ]


def test_validate_agent_id():
    so = AgentClient(settings_for("http://127.0.0.1:1"))
    thin = AgentClient(settings_for("http://127.0.0.1:1", "thinnest"))
    assert so.validate_agent_id(SO_AGENT) is None
    assert "UUID" in so.validate_agent_id("ag_abc")
    assert so.validate_agent_id(SO_AGENT + "0") is not None
    assert thin.validate_agent_id("ag_c47e7c97_b2f2") is None
    for bad in ("ag_", "ag-x", "agent_1", SO_AGENT, "ag_x y"):
        assert "ag_" in thin.validate_agent_id(bad)


# --- HTTP failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "code", "http_status"),
    [
        ("fail:401", FailureCode.INVALID_API_KEY, 401),
        ("fail:402", FailureCode.INSUFFICIENT_BALANCE, 402),
        ("fail:404", FailureCode.AGENT_NOT_FOUND, 404),
    ],
)
async def test_http_failures_from_mock(mock_url, trigger, code, http_status):
    sleep = RecordingSleep()
    async with client_for(mock_url, sleep=sleep) as client:
        events = await collect(client, SO_AGENT, trigger)
    failure = failure_of(events)
    assert (failure.code, failure.http_status) == (code, http_status)
    assert failure.trace_id and failure.trace_id.startswith("trace-")
    assert failure.detail and "(mock)" in failure.detail
    assert len(events) == 1 and sleep.delays == []


async def test_unknown_conversation_is_conversation_not_found(mock_url):
    async with client_for(mock_url) as client:
        events = await collect(client, SO_AGENT, "hi", "conv-unknown")
    failure = failure_of(events)
    assert (
        failure.code is FailureCode.CONVERSATION_NOT_FOUND
        and failure.upstream_code == "conversation_not_found"
    )


async def test_404_mentioning_conversation_without_code():
    answer = status(404, {"message": "No such conversation"})
    async with scripted_agent([answer]) as agent:
        async with client_for(agent.url) as client:
            with_cid = failure_of(await collect(client, SO_AGENT, "x", "c1"))
            without = failure_of(await collect(client, SO_AGENT, "x"))
    assert with_cid.code is FailureCode.CONVERSATION_NOT_FOUND
    assert without.code is FailureCode.AGENT_NOT_FOUND


async def test_400_is_bad_request_with_detail():
    async with scripted_agent(
        [status(400, {"error": {"code": "invalid_request", "message": "message too long"}})]
    ) as agent:
        async with client_for(agent.url) as client:
            failure = failure_of(await collect(client, SO_AGENT, "x"))
    assert (failure.code, failure.upstream_code, failure.detail) == (
        FailureCode.BAD_REQUEST,
        "invalid_request",
        "message too long",
    )


async def test_mid_stream_error_keeps_earlier_events(mock_url):
    async with client_for(mock_url) as client:
        events = await collect(client, SO_AGENT, "error please, with enough words to stream a few deltas")
    assert isinstance(events[0], ConversationStarted)
    assert text_of(events).startswith("You said")
    failure = failure_of(events)
    assert failure.code is FailureCode.STREAM_ERROR and failure.upstream_code == "model_error"
    assert "mid-answer" in failure.detail and failure.trace_id == events[0].trace_id


@pytest.mark.parametrize("dialect,agent", [("sentientone", SO_AGENT), ("thinnest", THIN_AGENT)])
async def test_dropped_connection(mock_url, dialect, agent):
    async with client_for(mock_url, dialect) as client:
        events = await collect(client, agent, "drop this reply somewhere in the middle please")
    assert text_of(events)
    assert failure_of(events).code is FailureCode.CONNECTION_DROPPED


async def test_stream_ending_without_done_is_dropped():
    async with scripted_agent([sse({"type": "delta", "content": "partial"})]) as agent:
        async with client_for(agent.url) as client:
            events = await collect(client, SO_AGENT, "x")
    assert events[0] == TextDelta("partial")
    assert failure_of(events).code is FailureCode.CONNECTION_DROPPED


async def test_non_event_stream_200_is_protocol_error():
    async with scripted_agent([status(200, {"message": "hello"})]) as agent:
        async with client_for(agent.url) as client:
            failure = failure_of(await collect(client, SO_AGENT, "x"))
    assert failure.code is FailureCode.PROTOCOL_ERROR and "application/json" in failure.detail


async def test_unreachable_after_retries():
    async with raw_server(lambda c: asyncio.sleep(0)) as server:
        url = server.url  # bound, then closed below: nothing listens there afterwards
    sleep = RecordingSleep()
    async with client_for(url, sleep=sleep, agent_max_retries=2) as client:
        failure = failure_of(await collect(client, SO_AGENT, "x"))
    assert failure.code is FailureCode.UNREACHABLE
    assert len(sleep.delays) == 2 and 0.375 <= sleep.delays[0] <= 0.625 and 0.75 <= sleep.delays[1] <= 1.25


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (status(503, {"code": "overloaded"}), FailureCode.UPSTREAM_UNAVAILABLE),
        (status(429, {"code": "rate_limited"}), FailureCode.RATE_LIMITED),
    ],
)
async def test_retries_exhausted(answer, code):
    sleep = RecordingSleep()
    async with scripted_agent([answer]) as agent:
        async with client_for(agent.url, sleep=sleep, agent_max_retries=3) as client:
            failure = failure_of(await collect(client, SO_AGENT, "x"))
    assert failure.code is code and len(agent.requests) == 4 and len(sleep.delays) == 3


async def test_5xx_backoff_then_success():
    sleep = RecordingSleep()
    answers = [
        status(503),
        status(502, "Bad gateway"),
        sse({"type": "delta", "content": "ok"}, {"type": "done"}),
    ]
    async with scripted_agent(answers) as agent:
        async with client_for(agent.url, sleep=sleep) as client:
            events = await collect(client, SO_AGENT, "x")
    assert events == [TextDelta("ok"), Completed()]
    assert len(agent.requests) == 3
    assert 0.375 <= sleep.delays[0] <= 0.625 and 0.75 <= sleep.delays[1] <= 1.25


async def test_429_retry_after_seconds():
    sleep = RecordingSleep()
    answers = [status(429, {}, {"Retry-After": "2"}), sse({"type": "done"})]
    async with scripted_agent(answers) as agent:
        async with client_for(agent.url, sleep=sleep) as client:
            events = await collect(client, SO_AGENT, "x")
    assert isinstance(events[-1], Completed) and sleep.delays == [2.0]


async def test_429_retry_after_http_date_and_cap():
    sleep = RecordingSleep()
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=10), usegmt=True)
    later = format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)
    answers = [
        status(429, {}, {"Retry-After": soon}),
        status(429, {}, {"Retry-After": later}),
        sse({"type": "done"}),
    ]
    async with scripted_agent(answers) as agent:
        async with client_for(agent.url, sleep=sleep, agent_retry_after_cap=30) as client:
            events = await collect(client, SO_AGENT, "x")
    assert isinstance(events[-1], Completed)
    assert 8.5 <= sleep.delays[0] <= 10.0 and sleep.delays[1] == 30


async def test_no_retry_once_an_event_arrived():
    answers = [sse({"type": "meta", "conversation_id": "c1"}, finish=False), sse({"type": "done"})]
    sleep = RecordingSleep()
    async with scripted_agent(answers) as agent:
        async with client_for(agent.url, sleep=sleep) as client:
            events = await collect(client, SO_AGENT, "x")
    assert events[0] == ConversationStarted("c1")
    assert failure_of(events).code is FailureCode.CONNECTION_DROPPED
    assert len(agent.requests) == 1 and sleep.delays == []


# --- the non-streaming fallback --------------------------------------------------------------


async def test_plan_upgrade_required_falls_back_to_chat():
    async with running_mock_agent(starter_plan=True, **FAST) as url:
        async with client_for(url) as client:
            events = await collect(client, SO_AGENT, "use the tool")
    kinds = [type(e) for e in events]
    assert kinds == [ConversationStarted, ToolCalled, ToolReturned, TextDelta, Completed]
    assert events[1] == ToolCalled("get_order", {"order_id": "ORD-1234"})
    assert events[2].name == "get_order" and "FedEx" in events[2].output
    done = events[-1]
    assert done.message_id.startswith("msg-") and done.usage.total_tokens > 0
    assert done.text == events[3].text and done.conversation_id == events[0].conversation_id


async def test_plan_upgrade_in_text_body_and_fallback_errors_map():
    answers = [status(403, "Forbidden: plan_upgrade_required"), status(402, {"code": "insufficient_balance"})]
    async with scripted_agent(answers) as agent:
        async with client_for(agent.url) as client:
            failure = failure_of(await collect(client, SO_AGENT, "x"))
    assert [r.path for r in agent.requests] == ["/v1/chat/stream", "/v1/chat"]
    assert failure.code is FailureCode.INSUFFICIENT_BALANCE


async def test_other_403_is_not_a_fallback():
    async with scripted_agent([status(403, {"code": "forbidden"})]) as agent:
        async with client_for(agent.url) as client:
            failure = failure_of(await collect(client, SO_AGENT, "x"))
    assert failure.code is FailureCode.INVALID_API_KEY and len(agent.requests) == 1


# --- timeouts and cancellation ---------------------------------------------------------------


async def test_idle_timeout_after_keepalive_then_silence():
    async def handler(conn: RawConnection) -> None:
        await conn.head()
        await conn.chunk(b": keep-alive\n\n")
        await conn.chunk(sse_frame({"type": "delta", "content": "hi"}))
        await conn.wait_disconnect()

    async with raw_server(handler) as server:
        async with client_for(server.url, agent_idle_timeout=0.3) as client:
            started = time.monotonic()
            events = await collect(client, SO_AGENT, "x")
            elapsed = time.monotonic() - started
    assert events[0] == TextDelta("hi")
    assert failure_of(events).code is FailureCode.IDLE_TIMEOUT
    assert 0.25 <= elapsed < 2


async def test_keepalives_within_idle_timeout_do_not_time_out():
    async def handler(conn: RawConnection) -> None:
        await conn.head()
        for _ in range(8):
            await conn.chunk(b": ping\n\n", pause=0.1)
        await conn.chunk(sse_frame({"type": "delta", "content": "late"}) + sse_frame({"type": "done"}))
        await conn.end_chunks()

    async with raw_server(handler) as server:
        async with client_for(server.url, agent_idle_timeout=0.3) as client:
            started = time.monotonic()
            events = await collect(client, SO_AGENT, "x")
    assert time.monotonic() - started > 0.6  # longer than the idle timeout in total
    assert events == [TextDelta("late"), Completed()]


async def test_cancellation_closes_the_upstream_connection():
    first_event = asyncio.Event()

    async def handler(conn: RawConnection) -> None:
        await conn.head()
        await conn.chunk(sse_frame({"type": "delta", "content": "hi"}))
        await conn.wait_disconnect()

    async def consume(client: AgentClient) -> None:
        async for _event in client.stream(SO_AGENT, "x"):
            first_event.set()

    async with raw_server(handler) as server:
        async with client_for(server.url) as client:
            task = asyncio.create_task(consume(client))
            await asyncio.wait_for(first_event.wait(), 2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(server.connections[0].disconnected.wait(), 2)


async def test_closing_the_stream_early_closes_the_connection():
    async def handler(conn: RawConnection) -> None:
        await conn.head()
        await conn.chunk(sse_frame({"type": "delta", "content": "hi"}))
        await conn.wait_disconnect()

    async with raw_server(handler) as server:
        async with client_for(server.url) as client:
            stream = client.stream(SO_AGENT, "x")
            assert await anext(stream) == TextDelta("hi")
            await stream.aclose()
            await asyncio.wait_for(server.connections[0].disconnected.wait(), 2)


# --- secrets ---------------------------------------------------------------------------------


def _assert_key_absent(caplog, failure) -> None:
    assert caplog.records, "expected log lines"
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
    for value in (repr(failure), failure.detail or "", failure.upstream_code or "", str(failure)):
        assert API_KEY not in value


@pytest.mark.parametrize(
    "answer",
    [
        status(401, {"code": "invalid_api_key", "message": f"Invalid API key: {API_KEY}"}),
        status(400, f"bad request from {API_KEY} (Authorization: Bearer {API_KEY})"),
        sse(
            {"type": "delta", "content": "so far"},
            {"type": "error", "code": API_KEY, "message": f"key {API_KEY} failed"},
        ),
    ],
    ids=["401-body", "400-body", "error-event"],
)
async def test_api_key_never_leaks(caplog, answer):
    caplog.set_level(logging.DEBUG)
    async with scripted_agent([answer]) as agent:
        async with client_for(agent.url) as client:
            events = await collect(client, SO_AGENT, "x")
    failure = failure_of(events)
    assert failure.detail and "[redacted]" in failure.detail
    _assert_key_absent(caplog, failure)


async def test_mock_echoing_a_wrong_key_is_redacted(caplog):
    caplog.set_level(logging.DEBUG)
    async with running_mock_agent(expected_key="sk-so-the-right-one", **FAST) as url:
        async with client_for(url) as client:
            failure = failure_of(await collect(client, SO_AGENT, "x"))
    assert failure.code is FailureCode.INVALID_API_KEY and "[redacted]" in failure.detail
    _assert_key_absent(caplog, failure)


# --- retry policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
    ],
)
def test_parse_retry_after(value, expected):
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=timezone.utc)
    assert parse_retry_after(value, now) == expected


def test_backoff_grows_with_jitter_and_cap():
    assert backoff_delay(0, lambda: 0.5) == 0.5
    assert backoff_delay(1, lambda: 0.0) == 0.75 and backoff_delay(1, lambda: 1.0) == 1.25
    assert backoff_delay(10, lambda: 1.0) == 8.0


async def test_malformed_json_line_is_skipped_and_the_reply_goes_on(caplog):
    """One broken data line (logged) must not cost the user the rest of the answer."""
    broken = sse(
        {"type": "meta", "conversation_id": "c1"},
        {"type": "delta", "content": "before "},
        '{"type": "delta", "content": "trunc',
        {"type": "delta", "content": "after"},
        {"type": "done", "conversation_id": "c1"},
    )
    async with scripted_agent([broken]) as agent:
        async with client_for(agent.url) as client:
            events = await collect(client, SO_AGENT, "x")
    assert text_of(events) == "before after"
    assert isinstance(events[-1], Completed)
    assert "not JSON" in caplog.text


async def test_undecodable_compressed_body_is_a_protocol_error():
    async def handler(conn: RawConnection) -> None:
        await conn.head(headers={"Content-Encoding": "gzip"})
        await conn.chunk(b"this is not gzip at all" * 4)
        await conn.end_chunks()

    async with raw_server(handler) as server:
        async with client_for(server.url) as client:
            failure = failure_of(await collect(client, SO_AGENT, "x"))
    assert failure.code is FailureCode.PROTOCOL_ERROR


async def test_proxy_from_the_environment_is_used(monkeypatch):
    async def handler(conn: RawConnection) -> None:
        await conn.head()
        await conn.body([sse_frame({"type": "done"})], chunked=True)

    async with raw_server(handler) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with client_for("http://agent.invalid") as client:
            events = await collect(client, SO_AGENT, "x")
    assert events == [Completed()]
    assert proxy.connections[0].request.path == "http://agent.invalid/v1/chat/stream"
