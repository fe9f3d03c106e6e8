"""Reply parts as Discord message payloads: text as content, extras as embeds, Stop as a button.

Discord's limits are enforced here, before a request is made: 2,000 characters of content,
at most 10 embeds, 256-character titles, 4,096-character descriptions, 1,024-character field
values and 6,000 characters across all embeds of one message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bridge.reply import MessagePart, Reply, ReplyStatus, ToolCall, ToolStatus
from bridge.split import close_open_fence

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELD_VALUE = 1024
MAX_EMBED_TOTAL = 6000
MAX_CUSTOM_ID = 100

GREEN, YELLOW, RED, BLURPLE, GREY = 0x57F287, 0xFEE75C, 0xED4245, 0x5865F2, 0x99AAB5
THINKING = "*Thinking…*"
STOP_PREFIX = "ab:stop:"

_TOOL_COLOURS = {
    ToolStatus.RUNNING: YELLOW,
    ToolStatus.DONE: GREEN,
    ToolStatus.FAILED: RED,
}
_TOOL_LABELS = {
    ToolStatus.RUNNING: "running…",
    ToolStatus.DONE: "done",
    ToolStatus.FAILED: "failed",
}


@dataclass(frozen=True, slots=True)
class DiscordMessage:
    """One message body. `placeholder` marks the empty first state, which needs no request
    when an interaction's deferred "thinking" message already shows it."""

    content: str
    embeds: tuple[dict[str, Any], ...] = ()
    components: tuple[dict[str, Any], ...] = field(default=())
    placeholder: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "embeds": list(self.embeds),
            "components": list(self.components),
            "allowed_mentions": {"parse": []},  # an agent's text never pings anyone
        }


def render_part(part: MessagePart, stop_id: str | None = None) -> DiscordMessage:
    """The payload for one part; extras and the Stop button only on the reply's last part."""
    reply = part.reply
    text = (
        close_open_fence(part.text) if part.text.strip() else ""
    )  # Discord refuses blank content
    if (
        len(text) > MAX_CONTENT
    ):  # the core splits below the limit; never send a refused body
        text = text[: MAX_CONTENT - 1] + "…"
    embeds: list[dict[str, Any]] = (
        fit_embeds(reply_embeds(reply)) if part.is_last else []
    )
    components: list[dict[str, Any]] = []
    if part.working and stop_id:
        components.append(stop_row(stop_id))
    content = text
    if not content and part.working:
        content = THINKING
    elif not content and not embeds:
        content = (
            "*The agent sent an empty answer.*"
            if reply.status is ReplyStatus.DONE
            else "…"
        )
    placeholder = part.index == 0 and not text and part.working and not embeds
    return DiscordMessage(content, tuple(embeds), tuple(components), placeholder)


def stop_row(custom_id: str) -> dict[str, Any]:
    return {
        "type": 1,
        "components": [
            {
                "type": 2,
                "style": 4,
                "label": "Stop",
                "custom_id": custom_id[:MAX_CUSTOM_ID],
            }
        ],
    }


def reply_embeds(reply: Reply, *, tool_text: int = 900) -> list[dict[str, Any]]:
    """Every extra of a reply, most important first: error, notice, sources, tool calls."""
    embeds: list[dict[str, Any]] = []
    if reply.error is not None:
        embeds.append(error_embed(reply))
    if reply.notice:
        embeds.append(
            {"description": _clip(reply.notice, MAX_DESCRIPTION), "color": GREY}
        )
    if reply.sources:
        embeds.append(sources_embed(reply))
    embeds.extend(tool_embed(call, tool_text) for call in reply.tool_calls)
    return embeds


def fit_embeds(embeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep within 10 embeds and 6,000 characters: older tool calls fold into one summary,
    then tool descriptions shrink, then the largest embeds lose their description."""
    fixed = [e for e in embeds if not e.get("_tool")]
    tools = [e for e in embeds if e.get("_tool")]
    room = MAX_EMBEDS - len(fixed)
    if len(tools) > room:
        folded, tools = tools[: len(tools) - room + 1], tools[len(tools) - room + 1 :]
        names = ", ".join(e["_tool"] for e in folded)
        summary = {
            "title": f"{len(folded)} earlier tool calls",
            "description": _clip(names, 1000),
            "color": GREY,
        }
        tools = [summary, *tools]
    result = [*fixed, *tools]
    limit = 1000
    while _total(result) > MAX_EMBED_TOTAL and limit > 50:
        limit //= 2
        for embed in result:
            if embed.get("_tool") and len(embed.get("description", "")) > limit:
                embed["description"] = _clip_code(embed["description"], limit)
    for embed in sorted(result, key=_size, reverse=True):
        if _total(result) <= MAX_EMBED_TOTAL:
            break
        embed.pop("description", None)
    return [{k: v for k, v in e.items() if not k.startswith("_")} for e in result]


def tool_embed(call: ToolCall, budget: int = 900) -> dict[str, Any]:
    lines = []
    if call.input is not None:
        lines.append("**Input**\n" + _code(_show(call.input), budget, "json"))
    if call.output is not None:
        lines.append("**Output**\n" + _code(_show(call.output), budget, "json"))
    embed: dict[str, Any] = {
        "title": _clip(f"🔧 {call.name}", MAX_TITLE),
        "color": _TOOL_COLOURS[call.status],
        "footer": {"text": _TOOL_LABELS[call.status]},
        "_tool": call.name,
    }
    if lines:
        embed["description"] = _clip("\n".join(lines), MAX_DESCRIPTION)
    return embed


def sources_embed(reply: Reply) -> dict[str, Any]:
    lines: list[str] = []
    used = 0
    for number, source in enumerate(reply.sources, 1):
        title = _clip(source.title.replace("[", "(").replace("]", ")") or "source", 200)
        line = (
            f"{number}. [{title}]({source.url})" if source.url else f"{number}. {title}"
        )
        if used + len(line) + 40 > MAX_DESCRIPTION:
            lines.append(f"…and {len(reply.sources) - number + 1} more")
            break
        lines.append(line)
        used += len(line) + 1
    return {"title": "Sources", "description": "\n".join(lines), "color": BLURPLE}


def error_embed(reply: Reply) -> dict[str, Any]:
    error = reply.error
    assert error is not None
    fields = [
        {
            "name": "Error code",
            "value": _clip(f"`{error.display_code}`", MAX_FIELD_VALUE),
            "inline": True,
        }
    ]
    trace = error.trace_id or reply.trace_id
    if trace:
        fields.append(
            {
                "name": "Trace id",
                "value": _clip(f"`{trace}`", MAX_FIELD_VALUE),
                "inline": True,
            }
        )
    return {
        "title": "Something went wrong",
        "description": _clip(error.user_message, MAX_DESCRIPTION),
        "color": RED,
        "fields": fields,
    }


# -- helpers ----------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _code(text: str, budget: int, language: str = "") -> str:
    text = text.replace("```", "`\u200b``")  # a fence inside would end the block early
    return f"```{language}\n{_clip(text, budget)}\n```"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_code(description: str, limit: int) -> str:
    """Shorten a tool description while keeping its code blocks closed."""
    return close_open_fence(_clip(description, limit))


def _size(embed: dict[str, Any]) -> int:
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    total += len(embed.get("footer", {}).get("text", ""))
    total += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    return total


def _total(embeds: list[dict[str, Any]]) -> int:
    return sum(_size(e) for e in embeds)
