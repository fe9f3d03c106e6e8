"""The Slack adapter end to end: signed deliveries into its real HTTP endpoint, replies into a
fake Slack Web API over real sockets, the real mock agent and a real SQLite store."""

from __future__ import annotations

import json
import time

from adapters.slack.mrkdwn import to_mrkdwn
from tests.conftest import upstream_text
from tests.slack_client import QUICK, fake, real_fake, running_slack, settled  # noqa: F401 (fixtures)


def working(message) -> bool:
    return any("blocks" in a for a in message.attachments)


async def test_bad_or_missing_signature_is_refused(bridge, fake):
    async with running_slack(bridge, fake) as slack:
        event = {
            "type": "app_mention",
            "user": "UUSER",
            "text": "<@UBOT0001> hi",
            "ts": "1.1",
            "channel": "C0001",
        }
        assert (await slack.event(event, secret="not-the-signing-secret"))[0] == 401
        assert (await slack.event(event, secret=None))[0] == 401
        body = json.dumps(
            {
                "type": "event_callback",
                "team_id": "T0001",
                "event": event,
                "event_id": "EvOld",
            }
        ).encode()
        stale = fake.signed_headers(
            body, timestamp=int(time.time()) - 600
        )  # a replayed request
        async with slack.session.post(
            slack.platform.url,
            data=body,
            headers={"Content-Type": "application/json", **stale},
        ) as response:
            assert response.status == 401
        await settled(slack)
    assert fake.count("chat.postMessage") == 0


async def test_url_verification_challenge_is_answered(bridge, fake):
    async with running_slack(bridge, fake) as slack:
        body = json.dumps(
            {"type": "url_verification", "token": "unused", "challenge": "chal-123"}
        ).encode()
        headers = {"Content-Type": "application/json", **fake.signed_headers(body)}
        async with slack.session.post(
            slack.platform.url, data=body, headers=headers
        ) as response:
            assert response.status == 200 and "chal-123" in await response.text()


async def test_mention_gets_placeholder_then_edits_then_final_text(bridge, real_fake):
    """Real limits."""
    fake = real_fake
    async with running_slack(bridge, fake) as slack:
        ts, thread_ts = await slack.mention("hello there")
        # Acknowledged before the reply work: the agent's first token takes 150 ms to come.
        assert not any(m.text for m in fake.thread_messages("C0001", thread_ts))
        await settled(slack)
    expected = await upstream_text(bridge, "hello there")
    (reply,) = fake.thread_messages("C0001", thread_ts)
    assert thread_ts == ts  # a top-level mention is answered in its own thread
    assert reply.versions[0] == ""  # the placeholder…
    first_post = next(c for c in fake.calls if c.method == "chat.postMessage")
    assert first_post.args["thread_ts"] == ts and any(
        "blocks" in a for a in first_post.args["attachments"]
    )
    assert fake.count("chat.update") >= 2  # …then edits…
    assert reply.text == to_mrkdwn(
        expected
    )  # …then the final text, without the Stop button
    assert not working(reply)
    assert (
        "UBOT0001" not in reply.text
    )  # the mention was stripped before asking the agent


async def test_direct_message_answered_without_native_streaming_when_off(bridge, fake):
    async with running_slack(bridge, fake, slack_native_streaming="off") as slack:
        ts = await slack.message("hi in private", channel="D0001", channel_type="im")
        await settled(slack)
    (reply,) = fake.thread_messages("D0001", ts)
    assert reply.text == to_mrkdwn(await upstream_text(bridge, "hi in private"))
    assert fake.count("chat.startStream") == 0


async def test_thread_follow_up_without_mention_continues_the_conversation(
    bridge, fake
):
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("first question")
        await settled(slack)
        await slack.message(
            "second question",
            channel="C0001",
            channel_type="channel",
            thread_ts=thread_ts,
        )
        await settled(slack)
        # A thread the bot never answered: no reply without a mention.
        await slack.message(
            "unrelated",
            channel="C0001",
            channel_type="channel",
            thread_ts="1600000000.000001",
        )
        await settled(slack)
    _, second = fake.thread_messages("C0001", thread_ts)
    assert (
        "message #2 of our conversation" in second.text
        and "first question" in second.text
    )
    assert fake.thread_messages("C0001", "1600000000.000001") == []


async def test_require_mention_binding_ignores_follow_ups(bridge, fake, agent_ids):
    await bridge.store.bind(
        "slack",
        "T0001",
        "C0001",
        agent_ids[0],
        "UADMIN",
        options={"require_mention": True},
    )
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("first question")
        await settled(slack)
        await slack.message(
            "no mention", channel="C0001", channel_type="channel", thread_ts=thread_ts
        )
        await settled(slack)
        await slack.mention("mentioned again", thread_ts=thread_ts)
        await settled(slack)
    replies = fake.thread_messages("C0001", thread_ts)
    assert len(replies) == 2 and "mentioned again" in replies[1].text


async def test_retried_delivery_never_answers_twice(bridge, fake):
    async with running_slack(bridge, fake) as slack:
        ts = slack.new_ts()
        event = {
            "type": "app_mention",
            "user": "UUSER",
            "text": "<@UBOT0001> once",
            "ts": ts,
            "channel": "C0001",
        }
        status, event_id = await slack.event(event)
        assert status == 200
        assert (await slack.event(event, event_id=event_id, retry=1))[0] == 200
        await settled(slack)
        assert (await slack.event(event, event_id=event_id, retry=2))[0] == 200
        await settled(slack)
    assert len(fake.thread_messages("C0001", ts)) == 1
    assert fake.count("chat.postMessage") == 1


async def test_ignores_itself_edits_deletions_and_other_bots(bridge, fake, agent_ids):
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("start")
        await settled(slack)
        posts = fake.count("chat.postMessage")
        # Its own message in the thread, by user id and by bot id.
        await slack.message(
            "mine",
            channel="C0001",
            channel_type="channel",
            user="UBOT0001",
            thread_ts=thread_ts,
        )
        await slack.message(
            "mine",
            channel="C0001",
            channel_type="channel",
            user=None,
            bot_id="BBOT0001",
            subtype="bot_message",
            thread_ts=thread_ts,
        )
        # An edit and a deletion of the user's message.
        await slack.message(
            "",
            channel="C0001",
            channel_type="channel",
            thread_ts=thread_ts,
            subtype="message_changed",
            message={"text": "edited"},
        )
        await slack.message(
            "",
            channel="C0001",
            channel_type="channel",
            thread_ts=thread_ts,
            subtype="message_deleted",
        )
        # Another bot, without allow_bots.
        await slack.message(
            "bot talk",
            channel="C0001",
            channel_type="channel",
            user=None,
            bot_id="BOTHER",
            subtype="bot_message",
            thread_ts=thread_ts,
        )
        await settled(slack)
        assert fake.count("chat.postMessage") == posts
        # With allow_bots, the other bot is answered.
        await bridge.store.bind(
            "slack",
            "T0001",
            "C0001",
            agent_ids[0],
            "UADMIN",
            options={"allow_bots": True},
        )
        await slack.message(
            "bot talk again",
            channel="C0001",
            channel_type="channel",
            user=None,
            bot_id="BOTHER",
            subtype="bot_message",
            thread_ts=thread_ts,
        )
        await settled(slack)
        assert fake.count("chat.postMessage") == posts + 1


async def test_mention_delivered_as_app_mention_and_as_message_is_answered_once(
    bridge, fake
):
    async with running_slack(bridge, fake) as slack:
        _, thread_ts = await slack.mention("first")
        await settled(slack)
        # Slack sends a mention inside a thread twice: app_mention and message.channels.
        ts, _ = await slack.mention("second", thread_ts=thread_ts)
        event = {
            "type": "message",
            "user": "UUSER",
            "text": "<@UBOT0001> second",
            "ts": ts,
            "channel": "C0001",
            "channel_type": "channel",
            "thread_ts": thread_ts,
        }
        assert (await slack.event(event))[0] == 200
        await settled(slack)
    assert len(fake.thread_messages("C0001", thread_ts)) == 2


async def test_unbound_channel_without_default_agent_points_to_the_slash_command(
    bridge_factory, fake
):
    async with (
        bridge_factory(agent_default_id="") as bridge,
        running_slack(bridge, fake) as slack,
    ):
        _, thread_ts = await slack.mention("anyone there?")
        await settled(slack)
    (message,) = fake.thread_messages("C0001", thread_ts)
    assert "/agent bind &lt;agent-id&gt;" in message.text


async def test_two_bots_never_loop(bridge, fake, agent_ids):
    """Another bot allowed to talk to ours: it gets one answer per turn of a person, not a loop."""
    await bridge.store.bind(
        "slack", "T0001", "C0001", agent_ids[0], "UADMIN", options={"allow_bots": True}
    )
    other = {"user": None, "bot_id": "BOTHER", "subtype": "bot_message"}
    async with running_slack(bridge, fake) as slack:
        ts = slack.new_ts()
        await slack.event(
            {
                "type": "app_mention",
                "text": "<@UBOT0001> hello bot",
                "ts": ts,
                "channel": "C0001",
                "bot_id": "BOTHER",
            }
        )
        await settled(slack)
        assert fake.count("chat.postMessage") == 1
        for i in range(3):  # the other bot answers our answer, again and again
            await slack.message(
                f"<@UBOT0001> echo {i}",
                channel="C0001",
                channel_type="channel",
                thread_ts=ts,
                **other,
            )
            await slack.event(
                {
                    "type": "app_mention",
                    "text": f"<@UBOT0001> echo {i}",
                    "ts": slack.new_ts(),
                    "channel": "C0001",
                    "thread_ts": ts,
                    "bot_id": "BOTHER",
                }
            )
        await settled(slack)
        assert fake.count("chat.postMessage") == 1  # stays at one reply
        await slack.message(
            "a person asks", channel="C0001", channel_type="channel", thread_ts=ts
        )
        await settled(slack)
        assert fake.count("chat.postMessage") == 2
        await slack.message(
            "bot again", channel="C0001", channel_type="channel", thread_ts=ts, **other
        )
        await settled(slack)
        assert (
            fake.count("chat.postMessage") == 3
        )  # after a person spoke, the bot gets one answer again
