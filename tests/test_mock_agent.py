"""The mock agent as an HTTP server, checked with plain httpx (not through AgentClient)."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

import bridge.mock_agent as mock_agent
from bridge.mock_agent import MOCK_TRIGGERS, running_mock_agent, serve
from tests.agent_fakes import SO_AGENT, THIN_AGENT

FAST = {"first_token_delay": 0.0, "delta_delay": 0.0}
SO_HEADERS = {"X-Api-Key": "sk-so-anything", "X-Agent-Id": SO_AGENT}
THIN_HEADERS = {"Authorization": "Bearer tok"}


@pytest.fixture
async def mock():
    async with running_mock_agent(**FAST) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            yield http


def events_of(response: httpx.Response) -> list[dict]:
    """Minimal SSE reading for LF-only frames (the mock's own output)."""
    out = []
    for frame in response.text.split("\n\n"):
        data = [line[5:].lstrip() for line in frame.split("\n") if line.startswith("data:")]
        if data:
            out.append(json.loads("\n".join(data)))
    return out


async def test_sentientone_auth_rules(mock):
    bearer = await mock.post(
        "/v1/chat/stream",
        json={"message": "hi"},
        headers={"Authorization": "Bearer sk-so-x", "X-Agent-Id": SO_AGENT},
    )
    missing = await mock.post("/v1/chat/stream", json={"message": "hi"}, headers={"X-Agent-Id": SO_AGENT})
    bad_agent = await mock.post(
        "/v1/chat/stream", json={"message": "hi"}, headers={**SO_HEADERS, "X-Agent-Id": "not-a-uuid"}
    )
    assert (bearer.status_code, bearer.json()["code"]) == (401, "invalid_api_key")
    assert missing.status_code == 401
    assert (bad_agent.status_code, bad_agent.json()["code"]) == (404, "agent_not_found")
    assert all(r.headers["X-Trace-Id"].startswith("trace-") for r in (bearer, missing, bad_agent))


async def test_expected_key_is_enforced():
    async with running_mock_agent(expected_key="sk-so-right", **FAST) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            wrong = await http.post("/v1/chat/stream", json={"message": "hi"}, headers=SO_HEADERS)
            right = await http.post(
                "/v1/chat/stream", json={"message": "hi"}, headers={**SO_HEADERS, "X-Api-Key": "sk-so-right"}
            )
            thin_wrong = await http.post(
                "/chat/stream", headers=THIN_HEADERS, json={"agent_id": THIN_AGENT, "message": "hi"}
            )
    assert wrong.status_code == 401 and right.status_code == 200 and thin_wrong.status_code == 401


async def test_current_generation_shape(mock):
    response = await mock.post("/v1/chat/stream", json={"message": "sources tool"}, headers=SO_HEADERS)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response)
    types = [e["type"] for e in events]
    assert types[:2] == ["meta", "sources"] and types[-1] == "done" and "tool_call" in types
    assert events[0]["trace_id"] == response.headers["X-Trace-Id"] == events[-1]["trace_id"]
    assert events[-1]["conversation_id"] == events[0]["conversation_id"]
    assert "start" not in types and "message" not in events[-1]
    assert response.text.startswith(":")  # a comment line opens the stream


async def test_old_generation_shape(mock):
    response = await mock.post(
        "/v1/chat/stream", json={"message": "sources tool"}, headers={**SO_HEADERS, "X-Mock-Generation": "1"}
    )
    events = events_of(response)
    types = [e["type"] for e in events]
    assert types[0] == "start" and "meta" not in types and "sources" not in types
    done = events[-1]["message"]
    text = "".join(e["content"] for e in events if e["type"] == "delta")
    assert done["content"] == text and done["token_count"] > 0 and done["tool_calls"][0]["output"]


async def test_conversation_memory_and_unknown_id(mock):
    first = events_of(await mock.post("/v1/chat/stream", json={"message": "first one"}, headers=SO_HEADERS))
    cid = first[0]["conversation_id"]
    second = await mock.post(
        "/v1/chat", json={"message": "second", "conversation_id": cid}, headers=SO_HEADERS
    )
    unknown = await mock.post(
        "/v1/chat/stream", json={"message": "x", "conversation_id": "conv-nope"}, headers=SO_HEADERS
    )
    reply = second.json()
    assert reply["conversation_id"] == cid and "message #2" in reply["message"]["content"]
    assert "first one" in reply["message"]["content"]
    assert (unknown.status_code, unknown.json()["code"]) == (404, "conversation_not_found")


async def test_state_is_per_app():
    async with running_mock_agent(**FAST) as a, running_mock_agent(**FAST) as b:
        async with httpx.AsyncClient() as http:
            first = events_of(
                await http.post(f"{a}/v1/chat/stream", json={"message": "hi"}, headers=SO_HEADERS)
            )
            cid = first[0]["conversation_id"]
            elsewhere = await http.post(
                f"{b}/v1/chat", json={"message": "hi", "conversation_id": cid}, headers=SO_HEADERS
            )
    assert elsewhere.status_code == 404


async def test_thinnest_endpoint(mock):
    no_auth = await mock.post(
        "/chat/stream", json={"agent_id": THIN_AGENT, "message": "hi"}, headers={"X-Api-Key": "sk-so-x"}
    )
    bad_agent = await mock.post(
        "/chat/stream", json={"agent_id": SO_AGENT, "message": "hi"}, headers=THIN_HEADERS
    )
    ok = await mock.post(
        "/chat/stream",
        json={"agent_id": THIN_AGENT, "message": "tool sources", "session_id": "s1"},
        headers=THIN_HEADERS,
    )
    again = await mock.post(
        "/chat/stream",
        json={"agent_id": THIN_AGENT, "message": "again", "session_id": "s1"},
        headers=THIN_HEADERS,
    )
    assert no_auth.status_code == 401 and bad_agent.status_code == 404
    types = [e["type"] for e in events_of(ok)]
    assert types[:3] == ["text", "tool_call", "tool_result"] and types[-1] == "done"
    assert "sources" not in types and "meta" not in types
    assert set(events_of(ok)[-1]["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    assert "message #2" in "".join(e.get("content", "") for e in events_of(again))


@pytest.mark.parametrize("code", [401, 402, 404, 429, 500])
async def test_fail_triggers(mock, code):
    response = await mock.post("/v1/chat/stream", json={"message": f"please fail:{code}"}, headers=SO_HEADERS)
    assert response.status_code == code
    assert ("Retry-After" in response.headers) == (code == 429)


async def test_fail_403_only_refuses_streaming(mock):
    stream = await mock.post("/v1/chat/stream", json={"message": "fail:403"}, headers=SO_HEADERS)
    chat = await mock.post("/v1/chat", json={"message": "fail:403"}, headers=SO_HEADERS)
    assert (stream.status_code, stream.json()["code"]) == (403, "plan_upgrade_required")
    assert chat.status_code == 200 and chat.json()["message"]["role"] == "assistant"


async def test_content_triggers(mock):
    async def text(message: str, dialect: str = "so") -> tuple[list[dict], str]:
        if dialect == "so":
            events = events_of(
                await mock.post("/v1/chat/stream", json={"message": message}, headers=SO_HEADERS)
            )
        else:
            events = events_of(
                await mock.post(
                    "/chat/stream", headers=THIN_HEADERS, json={"agent_id": THIN_AGENT, "message": message}
                )
            )
        return events, "".join(e.get("content", "") for e in events if e["type"] in {"delta", "text"})

    events, long_text = await text("something long")
    assert len(long_text) > 5000 and "```python" in long_text and long_text.count("\n\n") >= 5
    assert len(events) < 100
    _, markdown = await text("markdown please")
    assert "**" in markdown and "\n- " in markdown and "```" in markdown and "_italics_" in markdown
    events, _ = await text("an error here")
    assert events[-1]["type"] == "error" and events[-1]["code"] and events[-1]["message"]
    events, _ = await text("an error here", "thin")
    assert events[-1] == {"type": "error", "message": events[-1]["message"]}
    _, helptext = await text("help")
    assert all(keyword in helptext for keyword in MOCK_TRIGGERS)


async def test_drop_cuts_the_connection(mock):
    with pytest.raises(httpx.RemoteProtocolError):
        await mock.post(
            "/v1/chat/stream", json={"message": "drop it like it's hot, please"}, headers=SO_HEADERS
        )


async def test_slow_sends_keepalives():
    async with running_mock_agent(first_token_delay=0.0, delta_delay=0.0, slow_delta_delay=0.01) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/v1/chat/stream", json={"message": "slow"}, headers=SO_HEADERS)
    assert response.text.count(": keep-alive") >= 2 and events_of(response)[-1]["type"] == "done"


async def test_bad_bodies_are_400(mock):
    assert (await mock.post("/v1/chat/stream", content=b"{", headers=SO_HEADERS)).status_code == 400
    assert (await mock.post("/v1/chat", json={"message": ""}, headers=SO_HEADERS)).status_code == 400
    assert (
        await mock.post("/chat/stream", json={"agent_id": THIN_AGENT}, headers=THIN_HEADERS)
    ).status_code == 400


def test_triggers_are_documented():
    for keyword in MOCK_TRIGGERS:
        assert f"``{keyword}``" in (mock_agent.__doc__ or "")


async def test_serve_runs_until_cancelled():
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    task = asyncio.create_task(serve("127.0.0.1", port, **FAST))
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            try:
                response = await http.post(
                    f"http://127.0.0.1:{port}/v1/chat", json={"message": "hi"}, headers=SO_HEADERS
                )
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert response.status_code == 200
