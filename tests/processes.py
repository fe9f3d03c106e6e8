"""`agent-bridge run` as a real child process against the fake Slack, for lifecycle and
replica tests."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from bridge.store import Store
from tests.conftest import SENTIENTONE_AGENT
from tests.secret_guard import LIFECYCLE_KEY
from tests.slack_fake import BOT_TOKEN, SIGNING_SECRET

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




def lifecycle_env(fake, agent_url: str, database_url: str) -> dict[str, str]:
    """The environment of a bridge process: this one's, minus any bridge settings, plus the fakes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "BRIDGE_", "SLACK_", "DISCORD_"))}
    env.update(
        AGENT_API_URL=agent_url,
        AGENT_API_KEY=LIFECYCLE_KEY,
        AGENT_DEFAULT_ID=SENTIENTONE_AGENT,
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_HTTP_HOST="127.0.0.1",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake.api_url,
    )
    return env
