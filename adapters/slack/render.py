"""Rendering one reply part as a Slack message: mrkdwn text plus attachments.

The text is the agent's Markdown converted to mrkdwn. Extras sit in attachments so they can
be updated in place by `chat.update`: one per tool call (name, input, then output and
status), one compact list of sources, a red error box, a notice line, and — while the part
is still streaming — a working line with a Stop button. A native stream's final call
(`chat.stopStream`) takes blocks, not attachments, so the same extras are also rendered as
blocks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from adapters.slack.mrkdwn import escape, to_mrkdwn
from bridge.reply import MessagePart, ReplyStatus, ToolCall, ToolStatus

STOP_ACTION = "agent_bridge_stop"
"""`action_id` of the Stop button; the handler finds the thread from the action's message."""

SLACK_TEXT_LIMIT = 4000
"""What `chat.update` accepts in `text`."""

MAX_TOOL_DATA = 400
"""Tool input/output shown per call, in characters (full data is the agent's business)."""

_TOOL_STYLE = MappingProxyType(
    {
        ToolStatus.RUNNING: (":gear:", "running", "#439FE0"),
        ToolStatus.DONE: (":white_check_mark:", "done", "#2EB67D"),
        ToolStatus.FAILED: (":x:", "failed", "#E01E5A"),
    }
)
_ERROR_COLOUR = "#E01E5A"
_SOURCES_COLOUR = "#8D8D8D"
_TRUNCATED = "\n_(cut here: too long for one Slack message)_"
_EMPTY = "_(The agent sent an empty answer.)_"
"""Slack refuses a message with neither text nor attachments (`no_text`)."""


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """What the surface sends: `text` and `attachments` for post/update; `markdown` and
    `blocks` for a native stream (raw Markdown is what `chat.appendStream` takes)."""

    text: str
    attachments: tuple[dict[str, Any], ...] = ()
    markdown: str = ""
    blocks: tuple[dict[str, Any], ...] = field(default=())


def _data(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > MAX_TOOL_DATA:
        text = text[:MAX_TOOL_DATA] + " …"
    return "`" + escape(text.replace("`", "'").replace("\n", " ")) + "`"


def _tool_lines(call: ToolCall) -> tuple[str, str, list[str]]:
    icon, label, colour = _TOOL_STYLE[call.status]
    lines = [f"{icon} *{escape(call.name)}* · {label}"]
    if call.input is not None:
        lines.append(f"input: {_data(call.input)}")
    if call.output is not None:
        lines.append(f"output: {_data(call.output)}")
    return colour, f"{call.name} ({label})", lines


def _source_lines(part: MessagePart) -> list[str]:
    lines = []
    for n, source in enumerate(part.reply.sources, start=1):
        title = escape(source.title or source.url or source.id or "(untitled)").replace("|", "¦")
        lines.append(f"{n}. <{source.url}|{title}>" if source.url else f"{n}. {title}")
    return lines


def _error_lines(part: MessagePart) -> list[str]:
    error = part.reply.error
    assert error is not None
    detail = f"code `{escape(error.display_code)}`"
    trace = part.reply.trace_id or error.trace_id
    if trace:
        detail += f" · trace `{escape(trace)}`"
    return [f":warning: {escape(error.user_message)}", detail]


def _working_blocks() -> list[dict[str, Any]]:
    return [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": ":hourglass_flowing_sand: Working…"}]},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": STOP_ACTION,
                    "text": {"type": "plain_text", "text": "Stop"},
                    "style": "danger",
                    "value": "stop",
                }
            ],
        },
    ]


def _attachments(part: MessagePart) -> list[dict[str, Any]]:
    reply = part.reply
    out: list[dict[str, Any]] = []
    if part.is_last:
        for call in reply.tool_calls:
            colour, fallback, lines = _tool_lines(call)
            out.append({"color": colour, "fallback": fallback, "text": "\n".join(lines), "mrkdwn_in": ["text"]})
        if reply.sources:
            out.append(
                {
                    "color": _SOURCES_COLOUR,
                    "fallback": "Sources",
                    "text": "*Sources*\n" + "\n".join(_source_lines(part)),
                    "mrkdwn_in": ["text"],
                }
            )
        if reply.error is not None:
            out.append(
                {
                    "color": _ERROR_COLOUR,
                    "fallback": f"Error: {reply.error.user_message}",
                    "text": "\n".join(_error_lines(part)),
                    "mrkdwn_in": ["text"],
                }
            )
        if reply.notice:
            out.append({"fallback": reply.notice, "text": f"_{escape(reply.notice)}_", "mrkdwn_in": ["text"]})
    if part.working:
        out.append({"fallback": "Working…", "blocks": _working_blocks()})
    return out


def _blocks(part: MessagePart) -> list[dict[str, Any]]:
    """The final extras as blocks, for `chat.stopStream` (which takes no attachments)."""
    reply = part.reply
    sections: list[str] = []
    if part.is_last:
        sections += ["\n".join(_tool_lines(call)[2]) for call in reply.tool_calls]
        if reply.sources:
            sections.append("*Sources*\n" + "\n".join(_source_lines(part)))
        if reply.error is not None:
            sections.append("\n".join(_error_lines(part)))
        if reply.notice:
            sections.append(f"_{escape(reply.notice)}_")
    return [{"type": "section", "text": {"type": "mrkdwn", "text": s[:3000]}} for s in sections]


def render_part(part: MessagePart) -> SlackMessage:
    """One part as a Slack message. Partial text is closed (fences, code spans) before converting."""
    streaming = part.reply.status is ReplyStatus.STREAMING and part.is_last
    text = to_mrkdwn(part.text, partial=streaming) if part.text else ""
    if len(text) > SLACK_TEXT_LIMIT:
        # Only text that grows a lot when escaped (`<`, `>`, `&`) gets here.
        text = text[: SLACK_TEXT_LIMIT - len(_TRUNCATED)] + _TRUNCATED
    attachments = tuple(_attachments(part))
    if not text and not attachments:
        text = _EMPTY
    return SlackMessage(
        text=text,
        attachments=attachments,
        markdown=part.text,
        blocks=tuple(_blocks(part)),
    )
