"""The real `agent-bridge run` process against local fakes: SIGKILL mid-stream then restart,
and SIGTERM with a grace period. Nothing stored may be lost; no reply may stay "working"."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from bridge.keys import ThreadKey
from bridge.store import Store
from tests.conftest import SENTIENTONE_AGENT
from tests.secret_guard import LIFECYCLE_KEY
from tests.slack_client import SlackDelivery
from tests.slack_fake import BOT_TOKEN, SIGNING_SECRET, TEAM, running_fake_slack

EXE = str(Path(sys.executable).parent / "agent-bridge")
INTERRUPTED = "interrupted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BridgeProcess:
    """`agent-bridge run --platform slack` as a child process, HTTP mode on a fixed port."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                EXE, "run", "--platform", "slack", env=self.env, stdout=log, stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
            )
        for _ in range(300):
            if self.proc.returncode is not None:
                raise AssertionError(f"bridge exited early:\n{self.log.read_text()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError("bridge did not start listening")

    async def signal(self, sig: int, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)


@pytest.fixture
async def world(tmp_path, mock_agent_url):
    port = free_port()
    db = tmp_path / "bridge.db"
    async with running_fake_slack() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "BRIDGE_", "SLACK_", "DISCORD_"))}
        env.update(
            AGENT_API_URL=mock_agent_url,
            AGENT_API_KEY=LIFECYCLE_KEY,
            AGENT_DEFAULT_ID=SENTIENTONE_AGENT,
            BRIDGE_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
            BRIDGE_HTTP_HOST="127.0.0.1",
            BRIDGE_HTTP_PORT=str(port),
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.api_url,
        )
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/slack/events"
            delivery = SlackDelivery(fake, SimpleNamespace(url=url), session)
            yield SimpleNamespace(fake=fake, env=env, port=port, db=db, delivery=delivery, tmp=tmp_path)


def reply_of(fake, channel: str, thread_ts: str):
    """The bot's reply message in a thread (the first message the bot posted there)."""
    bot = [m for m in fake.thread_messages(channel, thread_ts) if m.ts != thread_ts]
    return bot[0] if bot else None


def shows(message, needle: str) -> bool:
    rendered = " ".join([message.text, str(message.attachments), str(message.blocks)])
    return needle.lower() in rendered.lower()


async def checkpointed(url: str, count: int) -> None:
    """Wait until `count` streaming replies have a checkpoint with text (saved right after their
    first text; a crash in the instant between showing text and saving it loses that text)."""
    async with await Store.open(url) as store:
        for _ in range(200):
            rows = await store.unfinished_replies()
            if sum(bool(r.checkpoint and r.checkpoint["text"]) for r in rows) >= count:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("replies were not checkpointed")


async def test_sigkill_mid_stream_then_restart_finalizes_every_reply(world):
    async with await Store.open(world.env["BRIDGE_DATABASE_URL"]) as store:
        await store.bind("slack", TEAM, "C0002", SENTIENTONE_AGENT, actor="UADMIN")
    first = BridgeProcess(world.env, world.port, world.tmp / "first.log")
    await first.start()
    threads = []
    for i, channel in enumerate(["C0001", "C0001", "C0002"]):
        _, thread_ts = await world.delivery.mention(f"tell me a slow and long story number {i}", channel=channel)
        threads.append((channel, thread_ts))
    await world.fake.wait_for(  # every reply shows some of the agent's text (not just the placeholder)
        lambda: all((m := reply_of(world.fake, c, t)) is not None and "You said" in m.text for c, t in threads), 30
    )
    await checkpointed(world.env["BRIDGE_DATABASE_URL"], count=3)
    assert await first.signal(signal.SIGKILL) == -signal.SIGKILL

    async with await Store.open(world.env["BRIDGE_DATABASE_URL"]) as store:
        left = await store.unfinished_replies()
        everything = await store.recent_replies(ThreadKey("slack", TEAM, "C0001", ""), 10, whole_channel=True)
        assert len(left) == 3, (everything, (world.tmp / "first.log").read_text())  # the crash left them streaming
        assert {r.key.thread for r in left} == {t for _, t in threads}

    second = BridgeProcess(world.env, world.port, world.tmp / "second.log")
    await second.start()
    await world.fake.wait_for(lambda: all(shows(reply_of(world.fake, c, t), INTERRUPTED) for c, t in threads), 30)
    for channel, thread_ts in threads:
        message = reply_of(world.fake, channel, thread_ts)
        assert "You said" in message.text  # the text shown before the crash stays
        assert not shows(message, "agent_bridge_stop")  # no Stop button, no working indicator left
    assert await second.signal(signal.SIGTERM) == 0

    async with await Store.open(world.env["BRIDGE_DATABASE_URL"]) as store:
        assert await store.unfinished_replies() == []
        for channel, thread_ts in threads:
            conversation = await store.get_conversation(ThreadKey("slack", TEAM, channel, thread_ts))
            assert conversation is not None and conversation.conversation_id
            (record,) = await store.recent_replies(ThreadKey("slack", TEAM, channel, thread_ts), 5)
            assert record.status == "interrupted"
        assert (await store.get_binding("slack", TEAM, "C0002")).agent_id == SENTIENTONE_AGENT
    assert "Traceback" not in (world.tmp / "second.log").read_text()


async def test_sigterm_finishes_within_grace_then_interrupts_the_rest(world):
    env = {**world.env, "BRIDGE_SHUTDOWN_GRACE": "1.5"}
    bridge = BridgeProcess(env, world.port, world.tmp / "term.log")
    await bridge.start()
    _, quick = await world.delivery.mention("hello there")
    _, slow = await world.delivery.mention("tell me a slow and long story", channel="C0002")
    await world.fake.wait_for(lambda: (m := reply_of(world.fake, "C0002", slow)) is not None and "You said" in m.text, 20)
    assert await bridge.signal(signal.SIGTERM) == 0

    finished = reply_of(world.fake, "C0001", quick)
    assert finished.text and not shows(finished, INTERRUPTED) and not shows(finished, "agent_bridge_stop")
    cut = reply_of(world.fake, "C0002", slow)
    assert shows(cut, INTERRUPTED) and not shows(cut, "agent_bridge_stop")
    async with await Store.open(world.env["BRIDGE_DATABASE_URL"]) as store:
        statuses = {
            thread: (await store.recent_replies(ThreadKey("slack", TEAM, channel, thread), 1))[0].status
            for channel, thread in (("C0001", quick), ("C0002", slow))
        }
    assert statuses == {quick: "done", slow: "interrupted"}
