"""SSE framing over a raw TCP server: every line ending, every split, both body framings.

The server writes the HTTP/1.1 response by hand so the tests decide exactly where each
write boundary falls: inside a UTF-8 character, between CR and LF, inside a field name.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.agent import AgentClient
from bridge.events import Completed, ConversationStarted, TextDelta, ToolCalled, Usage
from tests.agent_fakes import SO_AGENT, RawConnection, collect, raw_server, settings_for

EXPECTED = [
    ConversationStarted("c-ü", "tr-1"),
    TextDelta("héllo "),
    TextDelta("wörld 😀 "),
    TextDelta("日本語"),
    ToolCalled("lookup", {"q": "ß"}),
    Completed("c-ü", "tr-1", "m1", "héllo wörld 😀 日本語", Usage(total_tokens=9)),
]


def stream_bytes(eol: str) -> bytes:
    """A valid stream using every SSE feature the upstream may send, with `eol` line ends."""
    lines = [
        ": welcome",
        "retry: 3000",
        "",
        "id: 1",
        'data: {"type":"meta","conversation_id":"c-ü","trace_id":"tr-1"}',
        "",
        ": keep-alive",
        "",
        "event: delta",
        'data: {"content":"héllo "}',
        "",
        'data: {"type":"delta",',
        'data: "content":"wörld 😀 "}',
        "",
        'data:{"type":"delta","content":"日本語"}',
        "",
        "data: ",
        "",
        "id: 2",
        'data: {"type":"tool_call","name":"lookup","input":{"q":"ß"}}',
        "",
        'data: {"type":"done","message":{"id":"m1","content":"héllo wörld 😀 日本語","token_count":9}}',
        "",
    ]
    return eol.join(lines).encode() + eol.encode()


async def _run(parts: list[bytes], *, chunked: bool, pause: float = 0.0, **overrides) -> list:
    async def handler(conn: RawConnection) -> None:
        await conn.head(chunked=chunked)
        await conn.body(parts, chunked=chunked, pause=pause)

    async with raw_server(handler) as server:
        async with AgentClient(settings_for(server.url, **overrides)) as client:
            return await collect(client, SO_AGENT, "x")


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-by-byte"])
async def test_framing_variants(eol, chunked, bytewise):
    data = stream_bytes(eol)
    parts = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    assert await _run(parts, chunked=chunked) == EXPECTED


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
async def test_splits_inside_utf8_and_crlf_are_read_separately(chunked):
    data = stream_bytes("\r\n")
    emoji = data.index("😀".encode())
    kanji = data.index("本".encode())
    crlf = data.index(b"\r\n")
    cuts = [crlf + 1, emoji + 1, emoji + 3, kanji + 2]  # between CR|LF, inside 4- and 3-byte chars
    assert data[crlf + 1 : crlf + 2] == b"\n"
    assert await _run(_split(data, cuts), chunked=chunked, pause=0.02) == EXPECTED


async def test_malformed_and_unknown_events_are_skipped(caplog):
    caplog.set_level(logging.WARNING, logger="bridge.agent")
    data = (
        b"data: {not json\n\n"
        b"data: [1, 2]\n\n"
        b'data: {"type":"brand_new","content":"x"}\n\n'
        b'data: {"no_type":true}\n\n'
        b'event: text\ndata: {"type":"delta","content":"json type wins","extra":1}\n\n'
        b'event: tool_result\ndata: {"name":"t","output":"o"}\n\n'
        b'data: {"type":"done","usage":{"total_tokens":2}}\n\n'
    )
    events = await _run([data], chunked=True)
    assert [type(e).__name__ for e in events] == ["TextDelta", "ToolReturned", "Completed"]
    assert events[0] == TextDelta("json type wins")
    assert any("not JSON" in r.getMessage() for r in caplog.records)


async def test_nothing_is_read_after_done():
    data = b'data: {"type":"done"}\n\ndata: {"type":"delta","content":"late"}\n\n'
    assert await _run([data], chunked=False) == [Completed()]


async def test_error_event_ends_the_stream():
    data = (
        b'data: {"type":"delta","content":"a"}\n\n'
        b'data: {"type":"error","message":"boom"}\n\n'
        b'data: {"type":"done"}\n\n'
    )
    events = await _run([data], chunked=True, agent_api_dialect="thinnest")
    assert events[1] == TextDelta("a")
    assert events[-1].failure.detail == "boom" and len(events) == 3


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    chunked=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=len(stream_bytes("\r\n")) - 1), max_size=12),
)
def test_any_partition_parses_the_same(eol, chunked, cuts):
    data = stream_bytes(eol)
    parts = _split(data, [c for c in cuts if c < len(data)])
    assert asyncio.run(_run(parts, chunked=chunked, pause=0.001)) == EXPECTED
