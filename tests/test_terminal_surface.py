"""The terminal surface: what a reply looks like, and how messages are posted, edited and shown."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from adapters.terminal import TerminalSurface
from bridge.events import Source
from bridge.failures import AgentFailure, FailureCode
from bridge.keys import MessageRef, ThreadKey
from bridge.reply import MessagePart, Reply, ReplyStatus, ToolCall, ToolStatus
from bridge.surface import MessageGone, Scope, Surface

THREAD = ThreadKey("terminal", "local", "chat", "t1")


def recording_console() -> Console:
    return Console(record=True, width=100, force_terminal=False)


def part(reply: Reply, text: str | None = None, index: int = 0, is_last: bool = True) -> MessagePart:
    return MessagePart(reply, reply.text if text is None else text, index, is_last)


def rendered(surface: TerminalSurface, p: MessagePart) -> str:
    console = recording_console()
    console.print(surface.render(p))
    return console.export_text()


FULL_REPLY = Reply(
    text="## Result\n\nThe answer is **42**.",
    tool_calls=(
        ToolCall("web_search", {"query": "meaning of life"}, None, ToolStatus.RUNNING),
        ToolCall("calculator", {"expr": "6*7"}, {"value": 42}, ToolStatus.DONE),
        ToolCall("[bold]odd[/bold]", None, "exploded", ToolStatus.FAILED),
    ),
    sources=(
        Source("Hitchhiker's Guide", "https://example.org/guide"),
        Source("Offline notes"),
    ),
    error=AgentFailure.of(FailureCode.STREAM_ERROR, upstream_code="E_UPSTREAM", trace_id="trace-123"),
    status=ReplyStatus.FAILED,
    notice="new conversation",
)


def test_satisfies_the_surface_protocol() -> None:
    surface = TerminalSurface(recording_console())
    assert isinstance(surface, Surface)
    assert surface.platform == "terminal"
    assert surface.limits.max_text >= 2000
    assert surface.limits.post.scope is Scope.GLOBAL and surface.limits.edit.scope is Scope.MESSAGE


def test_render_shows_text_tools_sources_error_and_notice() -> None:
    out = rendered(TerminalSurface(), part(FULL_REPLY))
    for piece in (
        "Result",
        "The answer is 42.",
        "web_search",
        "running",
        "meaning of life",
        "⏳",
        "calculator",
        "✓",
        '"value": 42',
        "[bold]odd[/bold]",  # agent-supplied names print literally, never as markup
        "✗",
        "exploded",
        "Sources",
        "Hitchhiker's Guide",
        "https://example.org/guide",
        "Offline notes",
        FULL_REPLY.error.user_message,
        "code E_UPSTREAM",
        "trace trace-123",
        "new conversation",
    ):
        assert piece in out, piece
    assert out.index("The answer") < out.index("web_search") < out.index("Sources") < out.index("Error")


def test_extras_only_on_the_last_part() -> None:
    out = rendered(TerminalSurface(), part(FULL_REPLY, "first half", is_last=False))
    assert "first half" in out
    assert "web_search" not in out and "Sources" not in out and "E_UPSTREAM" not in out


def test_working_indicator_only_while_streaming_on_the_newest_part() -> None:
    surface = TerminalSurface()
    streaming = Reply(text="Thinking about it", status=ReplyStatus.STREAMING)
    assert rendered(surface, part(streaming)).rstrip().endswith("…")
    assert "…" not in rendered(surface, part(streaming, is_last=False))
    done = Reply(text="Thinking about it", status=ReplyStatus.DONE)
    assert "…" not in rendered(surface, part(done))
    assert rendered(surface, part(Reply())).strip() == "…"  # placeholder before the first word


def test_partial_unclosed_code_fence_renders() -> None:
    surface = TerminalSurface()
    for text in ("Here:\n\n```py", "Here:\n\n```python\ndef f():\n    return 1", "inline `code"):
        out = rendered(surface, part(Reply(text=text)))
        assert "Here" in out or "inline" in out
    out = rendered(surface, part(Reply(text="Here:\n\n```python\ndef f():\n    return 1")))
    assert "def f():" in out and "```" not in out


async def test_post_edit_delete_keep_latest_payloads() -> None:
    surface = TerminalSurface(recording_console())
    first = await surface.post(THREAD, surface.render(part(Reply(text="hello"))))
    second = await surface.post(THREAD, surface.render(part(Reply(text="second message"))))
    assert (first.id, second.id) == ("1", "2")
    assert first.thread == THREAD
    assert surface.plain_text("1") == "hello\n…"

    await surface.edit(first, surface.render(part(Reply(text="hello world", status=ReplyStatus.DONE))))
    assert surface.plain_text("1") == "hello world"
    assert set(surface.messages) == {"1", "2"}

    await surface.delete(second)
    assert set(surface.messages) == {"1"}
    with pytest.raises(MessageGone):
        await surface.edit(second, surface.render(part(Reply(text="too late"))))
    with pytest.raises(MessageGone):
        await surface.delete(MessageRef(THREAD, "99"))


async def test_non_terminal_prints_each_final_state_once_at_end_of_exchange() -> None:
    console = recording_console()
    surface = TerminalSurface(console)
    surface.begin_exchange()
    ref = await surface.post(THREAD, surface.render(part(Reply(text="draft one"))))
    for word in ("draft two", "draft three"):
        await surface.edit(ref, surface.render(part(Reply(text=word))))
    doomed = await surface.post(THREAD, surface.render(part(Reply(text="placeholder"))))
    await surface.delete(doomed)
    tail = await surface.post(THREAD, surface.render(part(Reply(text="tail part"))))
    await surface.edit(tail, surface.render(part(Reply(text="tail part, final", status=ReplyStatus.DONE))))
    await surface.edit(ref, surface.render(part(Reply(text="final answer", status=ReplyStatus.DONE), is_last=False)))
    assert console.export_text(clear=False) == ""  # nothing drawn while streaming

    surface.end_exchange()
    out = console.export_text()
    assert out == "final answer\n\ntail part, final\n"
    assert all(line == line.rstrip() for line in out.splitlines())  # clean when piped

    surface.end_exchange()  # idempotent
    assert console.export_text() == ""


async def test_exchanges_are_printed_separately() -> None:
    console = recording_console()
    surface = TerminalSurface(console)
    with surface.exchange():
        await surface.post(THREAD, surface.render(part(Reply(text="one", status=ReplyStatus.DONE))))
    assert console.export_text() == "one\n"
    # A post outside an explicit exchange opens one; close() ends it.
    await surface.post(THREAD, surface.render(part(Reply(text="two", status=ReplyStatus.DONE))))
    surface.close()
    assert console.export_text() == "two\n"
    assert surface.plain_text("1") == "one" and surface.plain_text("2") == "two"


async def test_terminal_console_redraws_in_place_and_leaves_final_state() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80, color_system=None, height=40)
    surface = TerminalSurface(console)
    assert surface.live
    with surface.exchange():
        ref = await surface.post(THREAD, surface.render(part(Reply(text="streaming"))))
        first_draw = buffer.getvalue()
        assert "streaming" in first_draw
        await surface.edit(ref, surface.render(part(Reply(text="streamed answer", status=ReplyStatus.DONE))))
        assert "streamed answer" in buffer.getvalue()[len(first_draw) :]
    out = buffer.getvalue()
    assert "\x1b[1A" in out  # the cursor moved up: redrawn in place, not appended
    final_line = out.replace("\x1b[?25h", "").rstrip("\n").rsplit("\x1b[2K", 1)[-1]
    assert final_line.rstrip() == "streamed answer"


def test_tool_data_json_strings_are_pretty_and_huge_data_is_cut() -> None:
    call = ToolCall("lookup", "plain words", '{"status":"shipped"}', ToolStatus.DONE)
    out = rendered(TerminalSurface(), part(Reply(text="ok", tool_calls=(call,), status=ReplyStatus.DONE)))
    assert "plain words" in out and '"status": "shipped"' in out
    huge = ToolCall("dump", None, "z" * 50_000, ToolStatus.DONE)
    out = rendered(TerminalSurface(), part(Reply(tool_calls=(huge,), status=ReplyStatus.DONE)))
    assert out.count("z") < 3000 and "…" in out
