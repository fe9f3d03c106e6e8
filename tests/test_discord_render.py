"""Rendering reply parts into Discord payloads within Discord's limits, checked with the same
validator the fake Discord applies to every request."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.discord.render import MAX_EMBED_TOTAL, THINKING, render_part
from adapters.discord.surface import parse_stop_id, stop_custom_id
from bridge.events import Source
from bridge.failures import AgentFailure, FailureCode
from bridge.keys import ThreadKey
from bridge.reply import MessagePart, Reply, ReplyStatus, ToolCall, ToolStatus
from tests.discord_fake import FakeDiscord

THREAD = ThreadKey("discord", "1" * 19, "2" * 20, "ask-" + "3" * 20)


def total(embeds) -> int:
    size = 0
    for e in embeds:
        size += (
            len(e.get("title", ""))
            + len(e.get("description", ""))
            + len(e.get("footer", {}).get("text", ""))
        )
        size += sum(len(f["name"]) + len(f["value"]) for f in e.get("fields", []))
    return size


def test_placeholder_shows_thinking_and_a_stop_button():
    payload = render_part(
        MessagePart(Reply(), "", 0, True), stop_custom_id(THREAD, "4" * 20)
    )
    assert payload.placeholder and payload.content == THINKING
    (button,) = payload.components[0]["components"]
    assert button["label"] == "Stop" and len(button["custom_id"]) <= 100
    assert parse_stop_id(button["custom_id"]) == ("4" * 20, THREAD)
    assert payload.json()["allowed_mentions"] == {"parse": []}


def test_finished_parts_have_no_button_and_extras_only_on_the_last():
    reply = Reply(
        text="a\n\nb",
        sources=(Source("Doc", "https://x.test"),),
        status=ReplyStatus.DONE,
    )
    first = render_part(MessagePart(reply, "a", 0, False), "ab:stop:x")
    last = render_part(MessagePart(reply, "b", 1, True), "ab:stop:x")
    assert not first.embeds and not first.components and not last.components
    assert (
        last.embeds[0]["title"] == "Sources"
        and "[Doc](https://x.test)" in last.embeds[0]["description"]
    )


def test_a_streaming_code_block_is_closed_for_display():
    reply = Reply(text="```python\nprint(1)")
    payload = render_part(MessagePart(reply, reply.text, 0, True))
    assert payload.content.count("```") == 2


def test_error_embed_is_red_with_code_and_trace():
    failure = AgentFailure.of(FailureCode.IDLE_TIMEOUT, trace_id="tr-1")
    reply = Reply(text="partial", error=failure, status=ReplyStatus.FAILED)
    payload = render_part(MessagePart(reply, "partial", 0, True))
    (embed,) = payload.embeds
    assert embed["color"] == 0xED4245 and embed["description"] == failure.user_message
    assert [f["value"] for f in embed["fields"]] == ["`idle_timeout`", "`tr-1`"]
    assert payload.content == "partial"


def test_many_large_tool_calls_fold_and_shrink_within_limits():
    calls = tuple(
        ToolCall(
            f"tool_{i}", {"query": "q" * 3000}, "```" + "o" * 5000, ToolStatus.DONE
        )
        for i in range(25)
    )
    sources = tuple(
        Source(f"Source {i} " + "t" * 150, f"https://example.com/{i}")
        for i in range(60)
    )
    reply = Reply(
        text="x",
        tool_calls=calls,
        sources=sources,
        error=AgentFailure.of(FailureCode.STREAM_ERROR),
        notice="Stopped.",
        status=ReplyStatus.FAILED,
    )
    payload = render_part(MessagePart(reply, "x", 0, True))
    assert len(payload.embeds) == 10 and total(payload.embeds) <= MAX_EMBED_TOTAL
    assert FakeDiscord._invalid(payload.json()) is None
    titles = [e.get("title", "") for e in payload.embeds]
    assert "🔧 tool_24" in titles and any("earlier tool calls" in t for t in titles)
    for embed in payload.embeds:
        assert embed.get("description", "").count("```") % 2 == 0


tool_calls = st.lists(
    st.builds(
        ToolCall,
        name=st.text(min_size=1, max_size=300),
        input=st.one_of(
            st.none(),
            st.text(max_size=3000),
            st.dictionaries(st.text(max_size=20), st.text(max_size=500), max_size=5),
        ),
        output=st.one_of(st.none(), st.text(max_size=6000)),
        status=st.sampled_from(list(ToolStatus)),
    ),
    max_size=15,
)


@settings(max_examples=60, deadline=None)
@given(
    calls=tool_calls,
    text=st.text(max_size=1995),
    working=st.booleans(),
    sources=st.integers(0, 40),
)
def test_every_rendered_part_is_a_body_discord_accepts(calls, text, working, sources):
    reply = Reply(
        text=text,
        tool_calls=tuple(calls),
        sources=tuple(
            Source("s" * 300, "https://example.com/" + "p" * 200)
            for _ in range(sources)
        ),
        status=ReplyStatus.STREAMING if working else ReplyStatus.DONE,
    )
    payload = render_part(
        MessagePart(reply, text, 0, True), stop_custom_id(THREAD, "9" * 20)
    )
    assert FakeDiscord._invalid(payload.json()) is None
