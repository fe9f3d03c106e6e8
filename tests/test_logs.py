"""Structured logs: every record about a reply carries its platform, channel, thread, reply id
and (once known) trace id — as text or as JSON lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bridge.keys import ThreadKey
from bridge.logs import ContextFilter, JsonFormatter, TextFormatter, log_context
from bridge.relay import Inbound
from tests.recording import RecordingSurface


@pytest.fixture
def captured():
    """A handler like the production one (context filter), writing JSON lines to a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


async def test_reply_records_carry_their_context_as_json(bridge, captured):
    thread = ThreadKey("recording", "W1", "C1", "t-logs")
    outcome = await bridge.relay.handle(Inbound(thread, "U1", "hello", None), RecordingSurface())
    assert outcome.ok
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    finished = [e for e in lines if "finished" in e["message"]]
    assert finished, lines
    entry = finished[-1]
    assert entry["platform"] == "recording" and entry["channel"] == "C1" and entry["thread"] == "t-logs"
    assert entry["reply_id"] == outcome.reply_id and entry["level"] == "INFO" and entry["time"]
    agent_lines = [e for e in lines if e["logger"] == "bridge.agent" and "trace_id" in e]
    assert agent_lines == [] or all(e["reply_id"] == outcome.reply_id for e in agent_lines)


def test_text_format_appends_the_context():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    with log_context(platform="slack", reply_id=7):
        ContextFilter().filter(record)
    line = TextFormatter().format(record)
    assert line.endswith("hello there [platform=slack reply_id=7]")
