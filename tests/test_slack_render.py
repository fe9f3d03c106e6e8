"""Markdown → mrkdwn, the rendered Slack message, settings validation and error mapping."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack import load_platform
from adapters.slack.mrkdwn import to_mrkdwn
from adapters.slack.render import SLACK_TEXT_LIMIT, STOP_ACTION, render_part
from adapters.slack.surface import MAX_TEXT, slack_limits, translate
from bridge.config import ConfigError
from bridge.events import Source
from bridge.failures import AgentFailure, FailureCode
from bridge.reply import MessagePart, Reply, ReplyStatus, ToolCall, ToolStatus
from bridge.surface import (
    AccessDenied,
    MessageExpired,
    MessageGone,
    RateLimited,
    Scope,
    StreamRefused,
    SurfaceError,
)


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __also__", "*bold* and *also*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("~~gone~~", "~gone~"),
        ("[docs](https://x.io/a?b=1&c=2)", "<https://x.io/a?b=1&c=2|docs>"),
        ("<https://x.io>", "<https://x.io>"),
        ("# Title", "*Title*"),
        ("### **Bold** title", "*Bold title*"),
        ("- one\n* two\n+ three", "• one\n• two\n• three"),
        ("1. first", "1. first"),
        ("> quoted **x**", "> quoted *x*"),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
        ("`**not bold** <x>`", "`**not bold** &lt;x&gt;`"),
        ("```python\nx = a < b  # **no**\n```", "```\nx = a &lt; b  # **no**\n```"),
        ("---", "──────────"),
    ],
)
def test_markdown_to_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_partial_text_is_safe() -> None:
    assert to_mrkdwn("```py\nx < 1", partial=True) == "```\nx &lt; 1\n```"
    assert to_mrkdwn("some **unfinished", partial=True) == "some **unfinished"
    assert to_mrkdwn("a [half](http", partial=True) == "a [half](http"
    assert to_mrkdwn("run `ls -la", partial=True) == "run `ls -la`"


_TOKENS = list("ab *_~`[]()<>&#-\n|:/.") + ["```", "**", "http://x.y", "> ", "- "]
_LINKS = re.compile(r"<(?:https?|mailto):[^<>]*>")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=60).map("".join))
def test_every_prefix_converts_and_leaves_no_raw_control_character(text: str) -> None:
    for end in range(0, len(text) + 1, 5):
        out = to_mrkdwn(text[:end], partial=True)
        bare = "\n".join(re.sub(r"^(> )+", "", line) for line in _LINKS.sub("", out).split("\n"))
        assert "<" not in bare and ">" not in bare
        assert "&" not in bare.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")


def _part(**reply: object) -> MessagePart:
    return MessagePart(Reply(**reply), str(reply.get("text", "")), 0, True)  # type: ignore[arg-type]


def test_streaming_part_has_working_line_and_stop_button_but_final_does_not() -> None:
    streaming = render_part(_part(text="hi"))
    buttons = [e for a in streaming.attachments for b in a.get("blocks", []) for e in b.get("elements", [])]
    assert any(e.get("action_id") == STOP_ACTION for e in buttons)
    final = render_part(_part(text="hi", status=ReplyStatus.DONE))
    assert final.attachments == () and final.text == "hi"


def test_tools_sources_error_and_notice_only_on_the_last_part() -> None:
    reply = Reply(
        text="x",
        tool_calls=(ToolCall("lookup", {"q": 1}, {"r": 2}, ToolStatus.DONE),),
        sources=(Source("Policy", "https://example.com/p"),),
        error=AgentFailure.of(FailureCode.STREAM_ERROR, trace_id="tr-1"),
        status=ReplyStatus.FAILED,
        notice="Stopped.",
    )
    last = render_part(MessagePart(reply, "x", 1, True))
    texts = [a["text"] for a in last.attachments]
    assert any('input: `{"q": 1}`' in t and 'output: `{"r": 2}`' in t for t in texts)
    assert any("<https://example.com/p|Policy>" in t for t in texts)
    assert any("code `stream_error`" in t and "trace `tr-1`" in t for t in texts)
    assert any("Stopped." in t for t in texts)
    assert len(last.blocks) == 4  # the same extras as blocks, for chat.stopStream
    earlier = render_part(MessagePart(Reply(status=ReplyStatus.DONE), "x", 0, False))
    assert earlier.attachments == () and earlier.blocks == ()


def test_an_empty_final_answer_still_has_text() -> None:
    assert render_part(_part(text="", status=ReplyStatus.DONE)).text  # Slack refuses no_text


def test_text_never_exceeds_slack_limit() -> None:
    worst = "<" * MAX_TEXT  # every character grows fourfold when escaped
    assert len(render_part(_part(text=worst, status=ReplyStatus.DONE)).text) <= SLACK_TEXT_LIMIT


def test_declared_limits_and_scopes() -> None:
    limits = slack_limits()
    assert limits.edit.scope is Scope.WORKSPACE and limits.edit.per_second * 60 <= 50
    assert limits.post.scope is Scope.CHANNEL and limits.post.per_second <= 1
    assert limits.append.per_second * 60 <= 100 and limits.stream_control.per_second * 60 <= 20
    assert slack_limits(10).edit.per_second == pytest.approx(limits.edit.per_second * 10)


def _api_error(method: str, error: str, status: int = 200, headers: dict | None = None) -> SlackApiError:
    response = AsyncSlackResponse(
        client=None, http_verb="POST", api_url="https://slack.com/api/" + method, req_args={},
        data={"ok": False, "error": error}, headers=headers or {}, status_code=status,
    )
    return SlackApiError("error", response)


@pytest.mark.parametrize(
    ("method", "error", "status", "kind"),
    [
        ("chat.update", "ratelimited", 429, RateLimited),
        ("chat.update", "message_not_found", 200, MessageGone),
        ("chat.postMessage", "is_archived", 200, MessageGone),
        ("chat.update", "cant_update_message", 200, MessageExpired),
        ("chat.appendStream", "message_not_in_streaming_state", 200, StreamRefused),
        ("chat.stopStream", "streaming_state_conflict", 200, StreamRefused),
        ("chat.update", "internal_error", 200, SurfaceError),
        ("chat.postMessage", "token_revoked", 200, AccessDenied),
        ("chat.postMessage", "missing_scope", 200, AccessDenied),
    ],
)
def test_errors_map_to_the_core_vocabulary(method: str, error: str, status: int, kind: type) -> None:
    exc = translate(_api_error(method, error, status, {"Retry-After": "7"}), method)
    assert type(exc) is kind
    if kind is RateLimited:
        assert exc.retry_after == 7


def test_load_platform_config() -> None:
    assert load_platform(slack_bot_token="") is None
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET") as missing:
        load_platform(slack_bot_token="xoxb-secret-value", slack_signing_secret="", slack_app_token="")
    assert "xoxb-secret-value" not in str(missing.value)
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN") as wrong:
        load_platform(slack_bot_token="xapp-secret-value", slack_signing_secret="s")
    assert "secret-value" not in str(wrong.value)
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        load_platform(slack_bot_token="xoxb-1", slack_app_token="xoxb-oops")
    socket = load_platform(slack_bot_token="xoxb-1", slack_app_token="xapp-1", slack_signing_secret="")
    assert socket is not None and socket.settings.socket_mode and set(socket.secrets()) == {"xoxb-1", "xapp-1"}
