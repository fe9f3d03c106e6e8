"""Discord's per-channel limits, interaction-token expiry and Stop, against the fake Discord."""

from __future__ import annotations

import asyncio

import pytest

from adapters.discord.rest import DiscordRest
from adapters.discord.surface import CONTINUED_NOTE, MOVED_NOTE
from bridge.surface import RateLimited
from tests.discord_fake import (
    BOT_TOKEN,
    CHANNEL_ID,
    MEMBER_PERMISSIONS,
    _user,
    running_fake_discord,
)
from tests.test_discord_flow import (
    final,
    prompt,
    replies,
    serving,
    settled,
    upstream_text,
)


async def test_the_fake_really_refuses_a_sixth_edit_within_five_seconds():
    """The headline test below is only meaningful if the fake enforces the limit."""
    async with (
        running_fake_discord() as fake,
        DiscordRest(fake.api_url, BOT_TOKEN) as rest,
    ):
        message = await rest.create_message(CHANNEL_ID, {"content": "x"})
        for i in range(5):
            await rest.edit_message(CHANNEL_ID, message["id"], {"content": f"edit {i}"})
        with pytest.raises(RateLimited) as refused:
            await rest.edit_message(
                CHANNEL_ID, message["id"], {"content": "one too many"}
            )
    assert 0 < refused.value.retry_after <= 5.0
    assert fake.rate_limited == 1


async def test_ten_asks_streaming_at_once_in_one_channel_get_no_429(bridge):
    questions = [f"question number {i}: tell me a short story" for i in range(10)]
    async with running_fake_discord() as fake, serving(fake, bridge):
        interactions = [await fake.send_slash("ask", prompt(q)) for q in questions]
        await fake.wait_for(
            lambda: all(
                final(fake.messages.get(i.original or "")) for i in interactions
            ),
            timeout=45,
        )
        await settled(fake)
    assert fake.rate_limited == 0
    expected = await asyncio.gather(*(upstream_text(bridge, q) for q in questions))
    assert [fake.messages[i.original]["content"] for i in interactions] == expected
    assert (
        all(r.status == "done" for r in await replies(bridge))
        and len(await replies(bridge)) == 10
    )
    assert fake.count("PATCH", "/webhooks/") >= 10


async def test_429s_are_waited_out_without_losing_text(bridge):
    """A fake stricter than the declared budget answers 429; every reply still ends complete."""
    questions = [f"story {i} please" for i in range(2)]
    async with (
        running_fake_discord(edit_limit=1, window=2.0) as fake,
        serving(fake, bridge),
    ):
        interactions = [await fake.send_slash("ask", prompt(q)) for q in questions]
        await fake.wait_for(
            lambda: all(
                final(fake.messages.get(i.original or "")) for i in interactions
            ),
            timeout=45,
        )
        await settled(fake)
    assert fake.rate_limited > 0
    for interaction, question in zip(interactions, questions, strict=True):
        assert fake.messages[interaction.original]["content"] == await upstream_text(
            bridge, question
        )


async def test_replies_move_to_channel_messages_before_the_interaction_token_expires(
    bridge,
):
    question = "slow story please"
    async with (
        running_fake_discord(token_lifetime=3.0) as fake,
        serving(fake, bridge, discord_interaction_deadline=1.0),
    ):
        interaction = await fake.send_slash("ask", prompt(question))
        channel_posts = lambda: [
            m for m in fake.posted(CHANNEL_ID) if not m.get("interaction_token")
        ]
        (moved,) = await fake.wait_for(
            lambda: [m for m in channel_posts() if final(m)], timeout=20
        )
        await settled(fake)
    expected = await upstream_text(bridge, question)
    assert (
        moved["content"] == expected
    )  # the whole text, continued in an ordinary message
    original = fake.messages[interaction.original]
    assert original["content"].endswith(CONTINUED_NOTE) and not original["components"]
    assert (
        fake.count(status=401) == 0
    )  # switched before Discord would have refused the token
    (record,) = await replies(bridge)
    assert record.status == "done" and moved["id"] in record.message_ids


async def test_stop_button_cancels_the_stream_only_for_the_asker(bridge):
    async with running_fake_discord() as fake, serving(fake, bridge):
        interaction = await fake.send_slash("ask", prompt("slow long story please"))
        message = await fake.wait_for(
            lambda: (
                (m := fake.messages.get(interaction.original or ""))
                and m["components"]
                and m["content"].startswith("You said")  # some text to keep
                and m
            )
        )
        custom_id = message["components"][0]["components"][0]["custom_id"]

        stranger = await fake.press_button(
            custom_id,
            message["id"],
            user=_user("777", "stranger"),
            permissions=MEMBER_PERMISSIONS,
        )
        await fake.wait_for(lambda: stranger.responded)
        assert (
            stranger.responded == 4 and stranger.ephemeral
        )  # told, privately, that they can't

        press = await fake.press_button(custom_id, message["id"])
        await fake.wait_for(lambda: press.responded)
        assert press.responded == 6  # acknowledged without a new message
        stopped = await fake.wait_for(
            lambda: (
                final(fake.messages[interaction.original])
                and fake.messages[interaction.original]
            )
        )
        await settled(fake)
    assert any(e.get("description") == "Stopped." for e in stopped["embeds"])
    assert (
        stopped["content"].startswith("You said")
        and "Part 11." not in stopped["content"]
    )
    (record,) = await replies(bridge)
    assert record.status == "stopped"


async def test_a_reply_that_starts_after_the_deadline_goes_to_the_channel(bridge):
    async with (
        running_fake_discord() as fake,
        serving(fake, bridge, discord_interaction_deadline=0.001),
    ):
        interaction = await fake.send_slash("ask", prompt("late question"))
        (moved,) = await fake.wait_for(
            lambda: [
                m
                for m in fake.posted(CHANNEL_ID)
                if not m.get("interaction_token") and final(m)
            ]
        )
        await settled(fake)
    assert moved["content"] == await upstream_text(bridge, "late question")
    assert fake.messages[interaction.original]["content"] == MOVED_NOTE
