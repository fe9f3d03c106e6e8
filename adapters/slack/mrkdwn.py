"""Markdown (what agents write) to Slack mrkdwn (what `text` fields render).

Slack's mrkdwn differs from Markdown: `*bold*`, `_italic_`, `~strike~`, `<url|label>` links,
no headings, and `&`, `<`, `>` must be escaped. The conversion is line-based and only
rewrites *complete* constructs, so a streaming prefix converts to a stable prefix: an
unclosed `**` or `[label](` stays literal until its closer arrives.
"""

from __future__ import annotations

import re

from bridge.split import close_open_fence

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(\[[ xX]\]\s+)?")
_QUOTE = re.compile(r"^ {0,3}((?:>\s?)+)")
_RULE = re.compile(r"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\((\S+?)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^\s<>]+)>")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_ITALIC_STAR = re.compile(r"(?<![\w*\\])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_STASH = re.compile("\x00(\\d+)\x00")
_BOLD_MARK = "\x01"


def escape(text: str) -> str:
    """Slack's three control characters, escaped as its docs require."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _inline(text: str, stash: list[str]) -> str:
    def keep(value: str) -> str:
        stash.append(value)
        return f"\x00{len(stash) - 1}\x00"

    text = _INLINE_CODE.sub(lambda m: keep(f"`{escape(m.group(2))}`"), text)

    def link(m: re.Match[str]) -> str:
        label, url = m.group(1).strip(), m.group(2).replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
        if not label or label == url:
            return keep(f"<{url}>")
        return keep(f"<{url}|{_emphasis(escape(label)).replace(_BOLD_MARK, '*')}>")

    text = _LINK.sub(link, text)
    text = _AUTOLINK.sub(lambda m: keep(f"<{m.group(1)}>"), text)
    text = _emphasis(escape(text))
    return text.replace(_BOLD_MARK, "*")


def _emphasis(text: str) -> str:
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _STRIKE.sub(r"~\1~", text)
    return _ITALIC_STAR.sub(r"_\1_", text)


def _line(line: str, stash: list[str]) -> str:
    if m := _HEADING.match(line):
        title = _inline(m.group(1), stash).replace("*", "")
        return f"*{title}*" if title else ""
    if _RULE.match(line):
        return "──────────"
    prefix = ""
    if m := _QUOTE.match(line):
        prefix = "> " * m.group(1).count(">")
        line = line[m.end():]
    if m := _BULLET.match(line):
        box = m.group(2)
        mark = ("☑ " if box.strip()[1] in "xX" else "☐ ") if box else ""
        prefix += f"{m.group(1)}• {mark}"
        line = line[m.end():]
    return prefix + _inline(line, stash)


def to_mrkdwn(markdown: str, *, partial: bool = False) -> str:
    """Convert Markdown to mrkdwn. With `partial`, an open code block or span is closed first."""
    if partial:
        markdown = close_open_fence(markdown)
    out: list[str] = []
    stash: list[str] = []
    in_fence = False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append("```")  # Slack ignores language tags; an info string would show as code
            continue
        out.append(escape(line) if in_fence else _line(line, stash))
    text = "\n".join(out)
    return _STASH.sub(lambda m: stash[int(m.group(1))], text)
