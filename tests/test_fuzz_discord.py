"""Fuzzing the Discord adapter through the fake gateway: odd slash commands, button presses and
messages — unknown commands and sub-commands, missing or mistyped options, huge or empty
prompts, stray custom ids, DMs. Our handlers may not raise, the loop may not break, and the bot
still answers a normal `/ask` afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.app import open_bridge
from bridge.mock_agent import running_mock_agent
from tests.conftest import bridge_settings
from tests.discord_fake import CHANNEL_ID, GUILD_ID, _user, running_fake_discord
from tests.loop_thread import LoopThread
from tests.test_discord_flow import final, prompt, serving

texts = st.text(max_size=80) | st.sampled_from(["", " ", "x" * 5000, "<@111>", "```", "bind", "status"])
option_values = texts | st.integers() | st.booleans() | st.none()
options = st.lists(
    st.fixed_dictionaries(
        # value-carrying option types (3 string, 4 integer, 5 boolean), the shapes Discord sends
        {"name": st.sampled_from(["prompt", "agent_id", "text", "bogus"]), "type": st.sampled_from([3, 4, 5]), "value": option_values}
    ),
    max_size=3,
)
# `/agent` is a group: Discord always sends it with a sub-command (see `sub_commands`).
commands = st.tuples(st.sampled_from(["ask", "unknown", ""]), options)
sub_commands = st.tuples(
    st.sampled_from(["bind", "unbind", "status", "reset", "frobnicate"]),
    st.lists(st.fixed_dictionaries({"name": st.just("agent_id"), "type": st.just(3), "value": texts}), max_size=1),
)
buttons = st.text(max_size=40) | st.sampled_from(["stop:", "stop:discord:1:2:3", "agent_bridge_stop", "stop:x:y"])
messages = st.tuples(texts, st.booleans(), st.booleans())


@contextlib.asynccontextmanager
async def discord_world(tmp_path) -> AsyncIterator[SimpleNamespace]:
    async with running_mock_agent() as agent_url, running_fake_discord() as fake:
        settings = bridge_settings(
            agent_url, tmp_path / "fuzz.db", bridge_user_rate_limit="off", bridge_channel_rate_limit="off"
        )
        async with open_bridge(settings) as bridge, serving(fake, bridge) as platform:
            yield SimpleNamespace(fake=fake, bridge=bridge, platform=platform)


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def world(tmp_path):
    with LoopThread(lambda: discord_world(tmp_path)) as running:
        yield running


def test_odd_interactions_and_messages_never_break_the_adapter(world, caplog):
    caplog.set_level(logging.WARNING)

    @FUZZ
    @given(command=commands)
    def slash(command):
        name, opts = command
        world.call(lambda w: w.fake.send_slash(name, opts))

    @FUZZ
    @given(sub=sub_commands, admin=st.booleans(), in_dm=st.booleans())
    def admin(sub, admin, in_dm):
        name, opts = sub
        permissions = "16" if admin else "0"
        world.call(
            lambda w: w.fake.send_slash(
                "agent", [{"name": name, "type": 1, "options": opts}], permissions=permissions,
                guild_id=None if in_dm else GUILD_ID,
            )
        )

    @FUZZ
    @given(custom_id=buttons)
    def press(custom_id):
        async def go(w):
            if not w.fake.messages:
                await w.fake.send_message("seed", mention_bot=True)
                await w.fake.wait_for(lambda: w.fake.posted(CHANNEL_ID))
            target = next(iter(w.fake.messages))
            await w.fake.press_button(custom_id, target)

        world.call(go)

    @FUZZ
    @given(message=messages)
    def chat(message):
        text, mention, from_bot = message
        author = _user("667", "some-bot", bot=True) if from_bot else None
        world.call(lambda w: w.fake.send_message(text, mention_bot=mention, author=author))

    for fuzz in (slash, admin, press, chat):
        fuzz()

    async def settle_and_ask(w) -> bool:
        for _ in range(600):
            if w.platform.bot is not None and w.platform.bot.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        interaction = await w.fake.send_slash("ask", prompt("still there?"))
        await w.fake.wait_for(lambda: interaction.original and final(w.fake.messages.get(interaction.original)), 30)
        return True

    assert world.call(settle_and_ask, timeout=60)
    assert world.loop_errors == [], world.loop_errors[:2]
    crashes = [r for r in caplog.records if r.exc_info and r.name.startswith(("adapters", "bridge"))]
    assert not crashes, [f"{r.name}: {r.getMessage()}" for r in crashes[:3]]
    assert not [r for r in caplog.records if r.name.startswith("discord") and r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records if r.name.startswith("discord") and r.levelno >= logging.ERROR
    ][:3]
