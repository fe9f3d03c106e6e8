"""The Discord adapter end to end: discord.py against a local fake Discord (REST + gateway),
the real mock agent over SSE and a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.discord.platform import DiscordPlatform
from adapters.discord.settings import load_discord_settings
from bridge.keys import ThreadKey
from tests.conftest import upstream_text
from tests.discord_fake import (
    ADMIN_PERMISSIONS,
    BOT_TOKEN,
    CHANNEL_ID,
    GUILD_ID,
    FakeDiscord,
    running_fake_discord,
)


@contextlib.asynccontextmanager
async def serving(
    fake: FakeDiscord, bridge, **overrides: Any
) -> AsyncIterator[DiscordPlatform]:
    settings = load_discord_settings(
        discord_bot_token=BOT_TOKEN, discord_api_url=fake.api_url, **overrides
    )
    platform = DiscordPlatform(settings, guild_ready_timeout=0.05)
    fake.platform = platform  # type: ignore[attr-defined]
    stop = asyncio.Event()
    task = asyncio.create_task(platform.run(bridge, stop))
    ready = asyncio.create_task(platform.connected.wait())
    await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert platform.connected.is_set(), "the client never became ready"
    try:
        yield platform
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with running_fake_discord() as running:
        yield running


def prompt(text: str) -> list[dict[str, Any]]:
    return [{"name": "prompt", "type": 3, "value": text}]


def final(message: dict[str, Any] | None) -> bool:
    """A reply message in its final state: real text or embeds, and no Stop button."""
    return (
        bool(message)
        and not message["components"]
        and bool(message["content"] or message["embeds"])
        and not message["flags"] & 128
    )


async def replies(bridge, channel: str = CHANNEL_ID):
    return await bridge.store.recent_replies(
        ThreadKey("discord", GUILD_ID, channel, ""), whole_channel=True
    )


async def settled(fake: FakeDiscord, platform: DiscordPlatform | None = None) -> None:
    """Wait until every reply task has finished (persisted), not just until the text is visible."""
    platform = platform or fake.platform
    for _ in range(500):
        if platform.bot is not None and platform.bot.in_flight == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("replies still in flight")



async def ask_and_wait(fake: FakeDiscord, text: str, **kwargs: Any) -> dict[str, Any]:
    interaction = await fake.send_slash("ask", prompt(text), **kwargs)
    await fake.wait_for(lambda: interaction.original)
    return await fake.wait_for(
        lambda: (
            final(fake.messages.get(interaction.original))
            and fake.messages[interaction.original]
        )
    )


async def test_ask_defers_then_streams_into_the_response(fake, bridge):
    async with serving(fake, bridge):
        interaction = await fake.send_slash("ask", prompt("hello there"))
        message = await fake.wait_for(
            lambda: (
                final(fake.messages.get(interaction.original or ""))
                and fake.messages[interaction.original]
            )
        )
        await settled(fake)
    assert interaction.responded == 5  # deferred ("thinking")
    expected = await upstream_text(bridge, "hello there")
    assert message["content"] == expected
    assert fake.count("PATCH", "/webhooks/") >= 1
    assert (
        fake.count("POST", "/channels/") == 0
    )  # everything went through the interaction
    # While streaming, the message carried the Stop button.
    assert any(state["components"] for state in message["history"] if state["content"])
    assert [r.status for r in await replies(bridge)] == ["done"]


async def test_a_reply_over_2000_characters_continues_in_follow_ups(fake, bridge):
    async with serving(fake, bridge):
        interaction = await fake.send_slash("ask", prompt("tell me something long"))
        await fake.wait_for(lambda: interaction.original)
        await settled(fake)
    ours = [
        m
        for m in fake.in_channel(CHANNEL_ID)
        if m.get("interaction_token") == interaction.token
    ]
    assert ours[0]["id"] == interaction.original and len(ours) >= 3
    assert all(len(m["content"]) <= 2000 for m in ours)
    assert all(not m["components"] for m in ours)  # no Stop button left anywhere
    assert fake.count("POST", "/webhooks/{app}/{token}") == len(ours) - 1  # follow-ups
    joined = "".join(m["content"] for m in ours)
    for number in range(1, 12):
        assert f"Part {number}." in joined
    for message in ours:  # every message renders its code fences balanced
        assert message["content"].count("```") % 2 == 0
    (record,) = await replies(bridge)
    assert record.status == "done" and list(record.message_ids) == [
        m["id"] for m in ours
    ]


async def test_tool_calls_and_sources_become_embeds(fake, bridge):
    async with serving(fake, bridge):
        message = await ask_and_wait(fake, "use a tool and cite sources")
        await settled(fake)
    embeds = {e.get("title"): e for e in message["embeds"]}
    tool = embeds["🔧 get_order"]
    assert "**Input**" in tool["description"] and "ORD-1234" in tool["description"]
    assert "FedEx" in tool["description"] and tool["footer"]["text"] == "done"
    sources = embeds["Sources"]["description"]
    assert "[Shipping policy](https://example.com/shipping)" in sources
    assert "[Returns and refunds](https://example.com/returns)" in sources
    assert "Order ORD-1234 has shipped" in message["content"]


async def test_an_agent_error_is_a_red_embed_and_keeps_the_text(fake, bridge):
    async with serving(fake, bridge):
        message = await ask_and_wait(fake, "please error out")
        await settled(fake)
    (embed,) = message["embeds"]
    assert embed["color"] == 0xED4245 and embed["title"] == "Something went wrong"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Error code"].strip("`") and fields["Trace id"].strip("`")
    assert message["content"].startswith("You said")  # the text before the error stays
    (record,) = await replies(bridge)
    assert (
        record.status == "failed"
        and record.error_code
        and record.trace_id == fields["Trace id"].strip("`")
    )


async def test_admin_binds_a_channel_and_a_member_is_refused(fake, bridge, agent_ids):
    _, other = agent_ids
    async with serving(fake, bridge):
        refused = await fake.send_slash(
            "agent",
            [
                {
                    "name": "bind",
                    "type": 1,
                    "options": [{"name": "agent_id", "type": 3, "value": other}],
                }
            ],
        )
        answer = await fake.wait_for(
            lambda: (
                final(fake.messages.get(refused.original or ""))
                and fake.messages[refused.original]
            )
        )
        assert refused.ephemeral and "only" in answer["content"].lower()
        assert await bridge.store.get_binding("discord", GUILD_ID, CHANNEL_ID) is None

        allowed = await fake.send_slash(
            "agent",
            [
                {
                    "name": "bind",
                    "type": 1,
                    "options": [
                        {"name": "agent_id", "type": 3, "value": other},
                        {"name": "new_thread", "type": 5, "value": True},
                    ],
                }
            ],
            permissions=ADMIN_PERMISSIONS,
        )
        answer = await fake.wait_for(
            lambda: (
                final(fake.messages.get(allowed.original or ""))
                and fake.messages[allowed.original]
            )
        )
        assert allowed.ephemeral and other in answer["content"]
        binding = await bridge.store.get_binding("discord", GUILD_ID, CHANNEL_ID)
        assert binding.agent_id == other and binding.options == {"new_thread": True}

        bad = await fake.send_slash(
            "agent",
            [
                {
                    "name": "bind",
                    "type": 1,
                    "options": [{"name": "agent_id", "type": 3, "value": "not an id"}],
                }
            ],
            permissions=ADMIN_PERMISSIONS,
        )
        answer = await fake.wait_for(
            lambda: (
                final(fake.messages.get(bad.original or ""))
                and fake.messages[bad.original]
            )
        )
        assert "not a valid agent id" in answer["content"]
    audit = await bridge.store.recent_audit(platform="discord")
    assert {"refused.bind", "binding.set"} <= {entry.action for entry in audit}


async def test_mention_opens_a_thread_and_the_thread_continues_without_mention(
    fake, bridge, agent_ids
):
    agent, _ = agent_ids
    await bridge.store.bind(
        "discord", GUILD_ID, CHANNEL_ID, agent, "admin", options={"new_thread": True}
    )
    async with serving(fake, bridge, discord_message_content=True):
        question = await fake.send_message(
            "What is the shipping policy?", mention_bot=True
        )
        thread_id = question["id"]
        first = await fake.wait_for(
            lambda: [m for m in fake.posted(thread_id) if final(m)]
        )
        assert fake.channels[thread_id]["name"] == "What is the shipping policy?"
        assert "message #1" in first[0]["content"]
        await settled(fake)
        conversation = await bridge.store.get_conversation(
            ThreadKey("discord", GUILD_ID, CHANNEL_ID, thread_id)
        )
        assert conversation.conversation_id

        await fake.send_message(
            "And what about returns?", channel_id=thread_id
        )  # no mention
        second = await fake.wait_for(
            lambda: [
                m for m in fake.posted(thread_id) if final(m) and m is not first[0]
            ]
        )
        assert "message #2" in second[0]["content"]
        assert (
            "What is the shipping policy?" in second[0]["content"]
        )  # the agent remembers the thread
        await settled(fake)
        again = await bridge.store.get_conversation(
            ThreadKey("discord", GUILD_ID, CHANNEL_ID, thread_id)
        )
        assert again.conversation_id == conversation.conversation_id

        await fake.send_message(
            "just chatting, not for the bot"
        )  # top-level, no mention
        await fake.send_message(
            "ping", mention_bot=True
        )  # a mention that is answered, for ordering
        await fake.wait_for(lambda: len(fake.channels) == 4)  # its own new thread
        await settled(fake)
    assert not fake.posted(CHANNEL_ID)


async def test_mention_without_thread_option_replies_in_the_channel(fake, bridge):
    async with serving(fake, bridge):
        question = await fake.send_message("hello bot", mention_bot=True)
        (reply,) = await fake.wait_for(
            lambda: [m for m in fake.posted(CHANNEL_ID) if final(m)]
        )
        await settled(fake)
    assert reply["message_reference"]["message_id"] == question["id"]
    assert reply["content"].startswith(
        "You said: “hello bot”"
    )  # the mention itself is not part of the question


async def test_dms_are_answered_and_other_bots_only_when_allowed(
    fake, bridge, agent_ids
):
    from tests.discord_fake import _user

    async with serving(fake, bridge):
        person = _user("555", "dm-person")
        dm = fake.dm_channel(person)
        await fake.send_message(
            "hi in private", channel_id=dm, author=person, guild_id=None
        )
        await fake.wait_for(lambda: [m for m in fake.posted(dm) if final(m)])

        robot = _user("666", "other-bot", bot=True)
        await fake.send_message("robot asks", mention_bot=True, author=robot)
        await fake.send_message(
            "hello from me",
            mention_bot=True,
            author=_user("111", "agent-bridge", bot=True),
        )
        await asyncio.sleep(0.5)
        await settled(fake)
        assert not fake.posted(CHANNEL_ID)

        await bridge.store.bind(
            "discord",
            GUILD_ID,
            CHANNEL_ID,
            agent_ids[0],
            "admin",
            options={"allow_bots": True},
        )
        await fake.send_message("robot asks again", mention_bot=True, author=robot)
        await fake.wait_for(lambda: [m for m in fake.posted(CHANNEL_ID) if final(m)])
        await settled(fake)


@pytest.mark.parametrize(
    ("content_intent", "options"),
    [
        (False, {"new_thread": True}),  # Discord blanks the follow-up's text
        (
            True,
            {"new_thread": True, "require_mention": True},
        ),  # the binding asks for mentions
    ],
    ids=["no-content-intent", "require-mention"],
)
async def test_thread_follow_ups_without_a_mention_can_be_ignored(
    fake, bridge, agent_ids, content_intent, options
):
    await bridge.store.bind(
        "discord", GUILD_ID, CHANNEL_ID, agent_ids[0], "admin", options=options
    )
    async with serving(fake, bridge, discord_message_content=content_intent):
        question = await fake.send_message("first question", mention_bot=True)
        thread_id = question["id"]
        await fake.wait_for(lambda: [m for m in fake.posted(thread_id) if final(m)])
        await settled(fake)
        await fake.send_message("a follow-up without a mention", channel_id=thread_id)
        await fake.send_message(
            "second question", channel_id=thread_id, mention_bot=True
        )
        replies_now = await fake.wait_for(
            lambda: (
                len([m for m in fake.posted(thread_id) if final(m)]) == 2
                and fake.posted(thread_id)
            )
        )
        await settled(fake)
    assert (
        "message #2" in replies_now[1]["content"]
        and "second question" in replies_now[1]["content"]
    )
    assert (
        len(fake.posted(thread_id)) == 2
    )  # the blank follow-up got no "your message was empty" reply


async def test_an_unbound_channel_is_told_how_to_bind(bridge_factory):
    async with (
        bridge_factory(agent_default_id=None) as bridge,
        running_fake_discord() as fake,
        serving(fake, bridge),
    ):
        message = await ask_and_wait(fake, "anyone there?")
        await settled(fake)
    assert "/agent bind <agent-id>" in message["content"] and not message["components"]


async def test_restart_finalizes_a_reply_a_crash_left_streaming(fake, bridge):
    """A reply row left `streaming` by a dead process: on connecting, its Discord message gets
    the saved text back, marked interrupted, without its Stop button."""
    import aiohttp

    from bridge.relay import INTERRUPTED_NOTICE
    from bridge.reply import Reply, reply_to_json

    headers = {"Authorization": f"Bot {BOT_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{fake.api_url}/channels/{CHANNEL_ID}/messages",
            json={"content": "Half an ans…", "components": []},
            headers=headers,
        ) as response:
            left_behind = (await response.json())["id"]
    key = ThreadKey("discord", GUILD_ID, CHANNEL_ID, "crashed-mention")
    dead = await bridge.store.create_reply(key, bridge.settings.agent_default_id, owner="elsewhere:1")
    await bridge.store.add_reply_message(dead, left_behind)
    await bridge.store.update_reply(dead, checkpoint=reply_to_json(Reply(text="Half an answer")))

    async with serving(fake, bridge):
        await fake.wait_for(lambda: fake.messages[left_behind]["embeds"])
    message = fake.messages[left_behind]
    assert message["content"] == "Half an answer" and not message["components"]
    assert message["embeds"][-1]["description"] == INTERRUPTED_NOTICE
    assert (await bridge.store.get_reply(dead)).status == "interrupted"


async def test_two_bots_never_loop(fake, bridge, agent_ids):
    from tests.discord_fake import _user

    await bridge.store.bind("discord", GUILD_ID, CHANNEL_ID, agent_ids[0], "admin", options={"allow_bots": True})
    robot = _user("666", "other-bot", bot=True)
    async with serving(fake, bridge):
        await fake.send_message("robot asks", mention_bot=True, author=robot)
        await fake.wait_for(lambda: [m for m in fake.posted(CHANNEL_ID) if final(m)])
        await settled(fake)
        for i in range(3):  # the other bot keeps answering our answers
            await fake.send_message(f"robot echo {i}", mention_bot=True, author=robot)
        await asyncio.sleep(0.3)
        await settled(fake)
        assert len([m for m in fake.posted(CHANNEL_ID) if final(m)]) == 1


async def test_a_stale_command_is_answered_privately_with_what_to_do(fake, bridge):
    """A command the bot no longer knows (commands changed, not re-synced): the user gets a
    private answer instead of "The application did not respond"."""
    async with serving(fake, bridge):
        interaction = await fake.send_slash("summarize", prompt("hello"))
        await fake.wait_for(lambda: interaction.original)
        message = fake.messages[interaction.original]
    assert interaction.ephemeral
    assert "agent-bridge discord sync-commands" in message["content"]
