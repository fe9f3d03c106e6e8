"""Rendering a reply part for the terminal: Markdown text, then rich panels for the extras.

Everything user- or agent-supplied goes into `Text` objects, never into markup strings, so a
tool name like ``[bold]`` or a title with brackets prints literally.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.style import Style
from rich.syntax import Syntax
from rich.text import Text

from bridge.events import Source
from bridge.failures import AgentFailure
from bridge.reply import MessagePart, ToolCall, ToolStatus
from bridge.split import close_open_fence

MAX_TOOL_DATA = 2000
"""Tool inputs/outputs are cut to this many characters: a terminal is no place for a 1 MB dump."""

WORKING = "…"

_TOOL_STATUS: dict[ToolStatus, tuple[str, str, str]] = {
    ToolStatus.RUNNING: ("⏳", "running", "yellow"),
    ToolStatus.DONE: ("✓", "done", "green"),
    ToolStatus.FAILED: ("✗", "failed", "red"),
}


def render_part(part: MessagePart) -> Group:
    """The whole message for one part; the reply's extras go on its last part only."""
    items: list[RenderableType] = []
    text = close_open_fence(part.text)  # a streaming prefix may have an unclosed fence
    if text.strip():
        items.append(Markdown(text))
    if part.is_last:
        reply = part.reply
        items.extend(tool_panel(call) for call in reply.tool_calls)
        if reply.sources:
            items.append(sources_panel(reply.sources))
        if reply.error is not None:
            items.append(error_panel(reply.error, reply.error.trace_id or reply.trace_id))
        if reply.notice:
            items.append(Text(reply.notice, style="dim italic"))
    if part.working:
        items.append(Text(WORKING, style="dim"))
    return Group(*items)


def _data(value: Any) -> RenderableType:
    """JSON (also JSON sent as a string) as highlighted JSON, other text as is; cut to `MAX_TOOL_DATA`."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.lstrip()[:1] in ("{", "[") else value
        except ValueError:
            pass
        if isinstance(value, str):
            return Text(_cut(value))
    try:
        dumped = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # e.g. circular structures
        return Text(_cut(repr(value)))
    return Syntax(_cut(dumped), "json", word_wrap=True, background_color="default")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TOOL_DATA else text[:MAX_TOOL_DATA] + " …"


def tool_panel(call: ToolCall) -> Panel:
    """One tool call: name and status in the title, input and (once known) output inside."""
    icon, label, colour = _TOOL_STATUS[call.status]
    body: list[RenderableType] = []
    if call.input is not None:
        body += [Text("input", style="bold dim"), _data(call.input)]
    if call.output is not None:
        body += [Text("output", style="bold dim"), _data(call.output)]
    return Panel(
        Group(*body) if body else Text("(no input)", style="dim"),
        title=Text.assemble(f"{icon} ", (call.name, "bold"), f" · {label}"),
        title_align="left",
        border_style=colour,
    )


def sources_panel(sources: Sequence[Source]) -> Panel:
    """Sources, one compact line each: the title linked to its URL, then the URL itself.

    Numbered by position (1-based), as the agent's ``[n]`` citations count them.
    """
    lines: list[Text] = []
    for n, source in enumerate(sources, start=1):
        line = Text(f"{n}. ", style="dim")
        if source.url:
            line.append(source.title or source.url, style=Style(link=source.url, underline=True))
            if source.title and source.title != source.url:
                line.append(f"  {source.url}", style=Style(link=source.url, dim=True))
        else:
            line.append(source.title or source.id or "(untitled)")
        lines.append(line)
    return Panel(Group(*lines), title=Text("Sources"), title_align="left", border_style="blue")


def error_panel(error: AgentFailure, trace_id: str | None) -> Panel:
    """What went wrong, for the person reading: the user sentence, the code and the trace id."""
    detail = Text(f"code {error.display_code}", style="dim")
    if trace_id:
        detail.append(f" · trace {trace_id}")
    return Panel(
        Group(Text(error.user_message), detail),
        title=Text("Error"),
        title_align="left",
        border_style="red",
        style="red",
    )
