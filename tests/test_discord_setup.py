"""Discord configuration, sharding, command registration, the invite URL, and keeping secrets
out of logs and errors — against the fake Discord where a network is involved."""

from __future__ import annotations

import asyncio
import logging

import discord
import pytest
from typer.testing import CliRunner

import adapters.discord as discord_adapter
from adapters.discord.cli import BOT_PERMISSIONS, app, invite_url, sync
from adapters.discord.connection import intents, make_client
from adapters.discord.platform import DiscordPlatform
from adapters.discord.rest import DiscordRest
from adapters.discord.settings import load_discord_settings
from bridge.config import ConfigError
from bridge.surface import MessageExpired, MessageGone
from tests.discord_fake import (
    APP_ID,
    BOT_TOKEN,
    CHANNEL_ID,
    GUILD_ID,
    running_fake_discord,
)
from tests.test_discord_flow import final, prompt, replies, serving, settled


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No DISCORD_* from the developer's shell or a .env file."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "BOT_TOKEN",
        "API_URL",
        "APPLICATION_ID",
        "SHARD_COUNT",
        "SHARD_IDS",
        "MESSAGE_CONTENT",
        "INTERACTION_DEADLINE",
    ):
        monkeypatch.delenv(f"DISCORD_{name}", raising=False)
    return monkeypatch


def test_platform_is_off_without_a_token(clean_env):
    assert discord_adapter.load_platform() is None
    clean_env.setenv("DISCORD_BOT_TOKEN", BOT_TOKEN)
    platform = discord_adapter.load_platform()
    assert (
        platform is not None
        and platform.name == "discord"
        and platform.secrets() == [BOT_TOKEN]
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DISCORD_BOT_TOKEN": "not-a-token"}, "DISCORD_BOT_TOKEN"),
        ({"DISCORD_BOT_TOKEN": f"Bot {BOT_TOKEN}"}, "DISCORD_BOT_TOKEN"),
        (
            {"DISCORD_BOT_TOKEN": BOT_TOKEN, "DISCORD_SHARD_IDS": "0,1"},
            "DISCORD_SHARD_COUNT",
        ),
        (
            {
                "DISCORD_BOT_TOKEN": BOT_TOKEN,
                "DISCORD_SHARD_COUNT": "2",
                "DISCORD_SHARD_IDS": "0,2",
            },
            "DISCORD_SHARD_IDS",
        ),
        (
            {"DISCORD_BOT_TOKEN": BOT_TOKEN, "DISCORD_SHARD_IDS": "zero"},
            "DISCORD_SHARD_IDS",
        ),
        (
            {"DISCORD_BOT_TOKEN": BOT_TOKEN, "DISCORD_INTERACTION_DEADLINE": "900"},
            "DISCORD_INTERACTION_DEADLINE",
        ),
        (
            {"DISCORD_BOT_TOKEN": BOT_TOKEN, "DISCORD_API_URL": "not a url"},
            "DISCORD_API_URL",
        ),
    ],
)
def test_bad_settings_are_one_line_naming_the_variable(clean_env, env, variable):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        discord_adapter.load_platform()
    message = str(error.value)
    assert variable in message and "\n" not in message
    assert "FakeBot" not in message  # never the token


async def test_intents_and_client_kind_follow_the_settings():
    plain = load_discord_settings(discord_bot_token=BOT_TOKEN)
    assert (
        not intents(plain).message_content
        and intents(plain).guild_messages
        and intents(plain).dm_messages
    )
    assert (
        not intents(plain).members and not intents(plain).presences
    )  # nothing privileged by default
    assert type(make_client(plain)) is discord.Client
    opted = load_discord_settings(
        discord_bot_token=BOT_TOKEN,
        discord_message_content=True,
        discord_shard_count=4,
        discord_shard_ids="2,3",
    )
    client = make_client(opted)
    assert intents(opted).message_content
    assert (
        isinstance(client, discord.AutoShardedClient)
        and client.shard_count == 4
        and client.shard_ids == [2, 3]
    )


async def test_shards_connect_to_the_gateway_the_configured_api_names(bridge):
    async with running_fake_discord() as fake:
        async with serving(
            fake, bridge, discord_shard_count=2, discord_shard_ids="0,1"
        ):
            interaction = await fake.send_slash("ask", prompt("hello shards"))
            await fake.wait_for(
                lambda: final(fake.messages.get(interaction.original or ""))
            )
            await settled(fake)
        # discord.py waits 5 s between IDENTIFYs (Discord's max_concurrency 1), so one case only.
        assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]
        assert all(
            i["intents"] & (1 << 15) == 0 for i in fake.identifies
        )  # no message-content intent


async def test_sync_commands_registers_ask_and_a_guild_only_admin_group():
    async with running_fake_discord() as fake:
        settings = load_discord_settings(
            discord_bot_token=BOT_TOKEN, discord_api_url=fake.api_url
        )
        assert sorted(await sync(settings, None)) == ["agent", "ask"]
        assert sorted(await sync(settings, int(GUILD_ID))) == ["agent", "ask"]
    commands = {c["name"]: c for c in fake.commands[None]}
    agent = commands["agent"]
    assert (
        int(agent["default_member_permissions"])
        == discord.Permissions(manage_channels=True).value
    )
    assert agent["contexts"] == [0] and agent["dm_permission"] is False  # guild only
    assert {o["name"] for o in agent["options"]} == {
        "bind",
        "unbind",
        "status",
        "reset",
    }
    assert (
        commands["ask"]["options"][0]["name"] == "prompt"
        and commands["ask"]["options"][0]["required"]
    )
    assert {c["name"] for c in fake.commands[GUILD_ID]} == {"agent", "ask"}


async def test_invite_url_asks_for_exactly_the_permissions_used():
    async with running_fake_discord() as fake:
        settings = load_discord_settings(
            discord_bot_token=BOT_TOKEN, discord_api_url=fake.api_url
        )
        url = await invite_url(settings)
    assert (
        f"client_id={APP_ID}" in url and f"permissions={BOT_PERMISSIONS.value}" in url
    )
    assert "scope=bot+applications.commands" in url
    assert BOT_PERMISSIONS == discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        create_public_threads=True,
        embed_links=True,
        read_message_history=True,
    )


def test_cli_without_a_token_says_what_to_set(clean_env):
    result = CliRunner().invoke(app, ["invite-url"])
    assert result.exit_code == 2 and "DISCORD_BOT_TOKEN" in result.output


async def test_expired_and_gone_messages_are_named_without_the_token():
    async with (
        running_fake_discord() as fake,
        DiscordRest(fake.api_url, BOT_TOKEN) as rest,
    ):
        with pytest.raises(MessageExpired) as expired:
            await rest.webhook(
                "PATCH", APP_ID, "itoken-secret-value", "@original", {"content": "x"}
            )
        with pytest.raises(MessageGone) as gone:
            await rest.edit_message(CHANNEL_ID, "424242", {"content": "x"})
    assert "itoken-secret-value" not in str(expired.value) and "{token}" in str(
        expired.value
    )
    assert "Unknown Message" in str(gone.value)


async def test_a_deleted_reply_stops_its_stream_and_no_secret_reaches_the_log(
    bridge, caplog
):
    caplog.set_level(logging.INFO)
    async with running_fake_discord() as fake, serving(fake, bridge):
        interaction = await fake.send_slash("ask", prompt("slow long story please"))
        await fake.wait_for(
            lambda: (
                (m := fake.messages.get(interaction.original or ""))
                and m["content"].startswith("You")
            )
        )
        del fake.messages[interaction.original]  # someone deleted the answer
        await settled(fake)
    (record,) = await replies(bridge)
    assert record.status == "stopped"
    assert fake.count(status=404) == 1  # no retrying against a message that is gone
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert BOT_TOKEN not in logged and interaction.token not in logged


async def test_a_refused_privileged_intent_is_a_configuration_error(bridge):
    async with running_fake_discord(message_content_enabled=False) as fake:
        settings = load_discord_settings(
            discord_bot_token=BOT_TOKEN,
            discord_api_url=fake.api_url,
            discord_message_content=True,
        )
        with pytest.raises(ConfigError) as error:
            await asyncio.wait_for(
                DiscordPlatform(settings).run(bridge, asyncio.Event()), 10
            )
    assert "DISCORD_MESSAGE_CONTENT" in str(error.value) and "Developer Portal" in str(
        error.value
    )


async def test_a_refused_token_is_a_configuration_error(bridge):
    async with running_fake_discord() as fake:
        settings = load_discord_settings(
            discord_bot_token="MTEx.wrong.token", discord_api_url=fake.api_url
        )
        with pytest.raises(ConfigError) as error:
            await asyncio.wait_for(
                DiscordPlatform(settings).run(bridge, asyncio.Event()), 10
            )
    assert "DISCORD_BOT_TOKEN" in str(error.value) and "wrong" not in str(error.value)


def test_cli_commands_run_against_the_configured_api(clean_env):
    """The typer commands as the lead mounts them: their own event loop, the fake in another thread."""
    import asyncio as aio
    import threading

    ready = threading.Event()
    stopping: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            async with running_fake_discord() as fake:
                stopping["fake"], stopping["stop"] = fake, aio.Event()
                stopping["loop"] = aio.get_running_loop()
                ready.set()
                await stopping["stop"].wait()  # type: ignore[union-attr]

        aio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    fake = stopping["fake"]
    try:
        clean_env.setenv("DISCORD_BOT_TOKEN", BOT_TOKEN)
        clean_env.setenv("DISCORD_API_URL", fake.api_url)  # type: ignore[attr-defined]
        synced = CliRunner().invoke(app, ["sync-commands", "--guild", GUILD_ID])
        invite = CliRunner().invoke(app, ["invite-url"])
    finally:
        stopping["loop"].call_soon_threadsafe(stopping["stop"].set)  # type: ignore[union-attr]
        thread.join(10)
    assert synced.exit_code == 0, synced.output
    assert (
        "Registered /ask, /agent" in synced.output
        and f"guild {GUILD_ID}" in synced.output
    )
    assert invite.exit_code == 0 and invite.output.startswith(
        "https://discord.com/oauth2/authorize?"
    )
    assert BOT_TOKEN not in synced.output + invite.output
