"""What a Slack reply looks like and how it survives Slack: attachments, long replies, Stop,
429s, native streams and their fall-back, and the admin command — all over real sockets."""

from __future__ import annotations

import json

from adapters.slack.mrkdwn import to_mrkdwn
from bridge.keys import ThreadKey
from bridge.relay import STOPPED_NOTICE
from tests.conftest import upstream_text
from tests.slack_client import QUICK, fake, real_fake, running_slack, settled  # noqa: F401 (fixtures)


def attachment_texts(message) -> str:
    return "\n".join(a.get("text", "") for a in message.attachments)


async def test_tool_calls_and_sources_are_attachments_updated_in_place(bridge, fake):
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("use a tool and cite sources")
        await settled(slack)
    (reply,) = fake.thread_messages("C0001", thread_ts)
    tool = next(a for a in reply.attachments if "input:" in a.get("text", ""))
    assert (
        ":white_check_mark:" in tool["text"]
        and "output:" in tool["text"]
        and tool["color"] == "#2EB67D"
    )
    sources = next(
        a for a in reply.attachments if a.get("text", "").startswith("*Sources*")
    )
    assert "<https://example.com/returns|Returns and refunds>" in sources["text"]
    # While it ran, the same message showed the tool as running (updated in place, not re-posted).
    updates = [
        c for c in fake.calls if c.method == "chat.update" and c.args["ts"] == reply.ts
    ]
    assert any(":gear:" in json.dumps(c.args.get("attachments")) for c in updates)
    assert len(fake.thread_messages("C0001", thread_ts)) == 1


async def test_error_is_a_red_attachment_and_the_text_so_far_stays(bridge, fake):
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("please error out")
        await settled(slack)
    (reply,) = fake.thread_messages("C0001", thread_ts)
    error = next(a for a in reply.attachments if a.get("color") == "#E01E5A")
    record = (
        await bridge.store.recent_replies(
            ThreadKey("slack", "T0001", "C0001", thread_ts), limit=1
        )
    )[0]
    assert record.status == "failed" and record.error_code and record.trace_id
    assert (
        f"`{record.error_code}`" in error["text"]
        and f"trace `{record.trace_id}`" in error["text"]
    )
    assert reply.text  # the text received before the error


async def test_long_reply_continues_in_further_thread_messages(bridge, fake):
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("tell me something long")
        await settled(slack, timeout=40)
    expected = await upstream_text(bridge, "tell me something long")
    messages = fake.thread_messages("C0001", thread_ts)
    assert len(expected) > 5000 and len(messages) >= 2
    assert all(0 < len(m.text) <= 4000 for m in messages)
    assert all(
        m.text.count("```") % 2 == 0 for m in messages
    )  # never cut inside a code fence
    joined = "".join(m.text for m in messages)
    for word in ("Part 1.", "Part 11.", "def step_8(x):"):
        assert word in joined
    assert fake.rate_limited == 0


async def test_stop_button_cancels_the_stream_and_marks_the_reply(bridge, fake):
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("be slow please")
        first = await fake.wait_for(
            lambda: next(iter(fake.thread_messages("C0001", thread_ts)), None)
        )
        await fake.wait_for(lambda: first.text)  # some text is visible
        assert (
            await slack.click_stop(
                channel="C0001", message_ts=first.ts, thread_ts=thread_ts
            )
            == 200
        )
        await settled(slack)
    expected = await upstream_text(bridge, "be slow please")
    (reply,) = fake.thread_messages("C0001", thread_ts)
    assert STOPPED_NOTICE in attachment_texts(reply)
    assert not any("blocks" in a for a in reply.attachments)
    assert len(reply.text) < len(to_mrkdwn(expected))
    record = (
        await bridge.store.recent_replies(
            ThreadKey("slack", "T0001", "C0001", thread_ts), limit=1
        )
    )[0]
    assert record.status == "stopped"


async def test_429_is_honoured_without_losing_text(bridge, real_fake):
    """Real limits."""
    fake = real_fake
    fake.throttle_next["chat.update"] = 2
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("hello despite limits")
        await settled(slack)
    assert fake.count("chat.update", status=429) == 2
    (reply,) = fake.thread_messages("C0001", thread_ts)
    assert reply.text == to_mrkdwn(await upstream_text(bridge, "hello despite limits"))
    assert not any("blocks" in a for a in reply.attachments)


async def test_direct_message_streams_natively_with_status(bridge, fake):
    async with running_slack(bridge, fake) as slack:
        root = await slack.message(
            "hello privately", channel="D0001", channel_type="im"
        )
        await settled(slack)
        follow = await slack.message(
            "and again", channel="D0001", channel_type="im", thread_ts=root
        )
        await settled(slack)
    expected = await upstream_text(bridge, "hello privately")
    first, second = fake.thread_messages("D0001", root)
    assert first.markdown == expected and not first.streaming  # streamed, then stopped
    assert fake.count("chat.startStream") == 2 and fake.count("chat.stopStream") == 2
    assert fake.count("chat.appendStream") >= 2 and fake.count("chat.postMessage") == 0
    assert "message #2" in second.markdown
    status_calls = [c for c in fake.calls if c.method == "assistant.threads.setStatus"]
    assert [c.args["thread_ts"] for c in status_calls] == [
        root
    ]  # a thread reply, not the root
    assert follow


async def test_native_stream_falls_back_to_updates_when_slack_ends_it(bridge, fake):
    fake.expire_streams_after = 2
    async with running_slack(bridge, fake) as slack:
        root = await slack.message(
            "hello with a fuller answer", channel="D0001", channel_type="im"
        )
        await settled(slack)
    expected = await upstream_text(bridge, "hello with a fuller answer")
    (reply,) = fake.thread_messages("D0001", root)
    assert any(c.error == "message_not_in_streaming_state" for c in fake.calls)
    assert fake.count("chat.update", status=200) >= 1
    assert reply.text == to_mrkdwn(expected)


async def test_admin_command_for_admin_and_refusal_for_others(bridge, fake, agent_ids):
    agent = agent_ids[1]
    async with running_slack(bridge, fake) as slack:
        assert await slack.command(f"bind {agent}", user="UUSER") == 200
        await fake.wait_for(lambda: fake.responses)
        refusal = fake.responses[-1]
        assert (
            refusal["response_type"] == "ephemeral"
            and "only workspace admins" in refusal["text"]
        )
        assert await bridge.store.get_binding("slack", "T0001", "C0001") is None

        assert await slack.command(f"bind {agent}", user="UADMIN") == 200
        await fake.wait_for(lambda: len(fake.responses) == 2)
        assert (
            fake.responses[-1]["response_type"] == "ephemeral"
            and agent in fake.responses[-1]["text"]
        )
        assert (
            await bridge.store.get_binding("slack", "T0001", "C0001")
        ).agent_id == agent

        assert await slack.command("bind not-a-uuid", user="UADMIN") == 200
        await fake.wait_for(lambda: len(fake.responses) == 3)
        assert "not a valid agent id" in fake.responses[-1]["text"]

        assert await slack.command("status", user="UUSER") == 200
        await fake.wait_for(lambda: len(fake.responses) == 4)
        assert agent in fake.responses[-1]["text"]
    audit = await bridge.store.recent_audit(platform="slack")
    assert {e.action for e in audit} >= {"refused.bind"} and any(
        e.actor == "UADMIN" for e in audit
    )
    assert fake.count("chat.postMessage") == 0  # answers are private


async def test_slack_admin_users_setting_grants_admin(bridge, fake, agent_ids):
    async with running_slack(bridge, fake, slack_admin_users="UOTHER, UUSER") as slack:
        assert await slack.command(f"bind {agent_ids[0]}", user="UUSER") == 200
        await fake.wait_for(lambda: fake.responses)
    assert (
        await bridge.store.get_binding("slack", "T0001", "C0001")
    ).agent_id == agent_ids[0]
    assert fake.count("users.info") == 0


async def test_native_streaming_in_channel_threads_names_the_recipient(bridge, fake):
    async with running_slack(bridge, fake, slack_native_streaming="all") as slack:
        _, thread_ts = await slack.mention("stream it here")
        await settled(slack)
    (start,) = [c for c in fake.calls if c.method == "chat.startStream"]
    assert (
        start.status == 200
        and start.args["recipient_user_id"] == "UUSER"
        and start.args["recipient_team_id"] == "T0001"
    )
    (reply,) = fake.thread_messages("C0001", thread_ts)
    assert (
        reply.markdown == await upstream_text(bridge, "stream it here")
        and not reply.streaming
    )


async def test_revoked_token_is_logged_with_what_to_do_and_the_reply_recorded_failed(
    bridge, fake, caplog
):
    fake.fail_next["chat.postMessage"] = ["token_revoked"]
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("hello")
        await settled(slack)
    assert fake.thread_messages("C0001", thread_ts)[1:] == []  # nothing could be posted
    assert (
        fake.count("chat.postMessage") == 1
    )  # and it was not retried: waiting cannot help
    (record,) = await bridge.store.recent_replies(
        ThreadKey("slack", "T0001", "C0001", thread_ts), 1
    )
    assert record.status == "failed" and record.error_code == "delivery_failed"
    assert "token_revoked" in caplog.text and "reinstall the app" in caplog.text
