"""Fuzzing the agent client with hostile SSE bodies: whatever the upstream sends, the stream
ends with exactly one `Completed` or `Failed` and nothing escapes as an exception."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.agent import AgentClient
from bridge.events import Completed, Failed
from tests.agent_fakes import SO_AGENT, RawConnection, raw_server, settings_for

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
event_types = st.sampled_from(
    ["start", "meta", "sources", "delta", "text", "tool_call", "tool_result", "done", "error", "ping", ""]
)
field_names = st.sampled_from(
    ["content", "conversation_id", "trace_id", "sources", "name", "input", "args", "result",
     "message", "code", "usage", "tool_calls", "type"]
)
plausible_events = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    event_types,
    st.dictionaries(field_names, json_values, max_size=4),
)
lines = st.one_of(
    plausible_events.map(lambda e: "data: " + json.dumps(e)),
    st.text(max_size=40).map(lambda t: "data: " + t),
    st.sampled_from([": keep-alive", "event: delta", "id: 7", "retry: 10", "retry: x", "data:", "", "bogus: 1"]),
    st.text(max_size=30),
)
bodies = st.tuples(
    st.lists(lines, max_size=12),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.binary(max_size=16),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies, chunk=st.integers(min_value=1, max_value=64), status=st.sampled_from([200, 200, 200, 400, 500]))
def test_any_body_ends_in_exactly_one_final_event(body, chunk, status):
    text_lines, eol, garbage = body
    data = eol.join(text_lines).encode("utf-8", "surrogatepass") + garbage

    async def scenario() -> list:
        async def handler(conn: RawConnection) -> None:
            await conn.head(status=status, chunked=True)
            await conn.body([data[i : i + chunk] for i in range(0, len(data), chunk)], chunked=True)

        async with raw_server(handler) as server:
            async with AgentClient(settings_for(server.url, agent_max_retries=0, agent_idle_timeout=2)) as client:
                return [event async for event in client.stream(SO_AGENT, "fuzz")]

    events = asyncio.run(scenario())
    finals = [e for e in events if isinstance(e, (Completed, Failed))]
    assert len(finals) == 1 and events[-1] is finals[0]
