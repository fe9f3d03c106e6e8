"""The `agent-bridge` command: demo, chat, run, mock agent, database and binding admin."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from bridge.config import ConfigError, Dialect, Settings, load_settings
from bridge.keys import ThreadKey
from bridge.reply import Reply, ReplyStatus, reply_to_json

T = TypeVar("T")

app = typer.Typer(
    help="Stream an AI agent's replies into Slack, Discord and the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

DEMO_AGENT_IDS = {
    Dialect.SENTIENTONE: "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
    Dialect.THINNEST: "ag_demo_agent",
}
TERMINAL_WORKSPACE = "local"
TERMINAL_CHANNEL = "cli"


def main() -> None:
    app()


def _fail(message: str, code: int = 2) -> typer.Exit:
    console = Console(stderr=True, soft_wrap=True)
    console.print("[bold red]error:[/] ", end="")
    console.print(message, highlight=False, markup=False)
    return typer.Exit(code)


def _settings(*, needs_agent: bool = False, **overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
        if needs_agent:
            settings.require_api_key()
        return settings
    except ConfigError as exc:
        raise _fail(f"configuration: {exc}") from None


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine, turning known start-up failures into one clear line."""
    from bridge.store import StoreUnavailable

    try:
        return asyncio.run(make())
    except StoreUnavailable as exc:
        raise _fail(str(exc)) from None
    except ConfigError as exc:  # found only once running, e.g. the HTTP port is taken
        raise _fail(f"configuration: {exc}") from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# -- chatting ------------------------------------------------------------------------------


def reply_json(reply: Reply | None, **extra: Any) -> dict[str, Any]:
    """The final reply as one JSON-able object (also for failures, with `error` set)."""
    return {**reply_to_json(reply or Reply(status=ReplyStatus.FAILED)), **extra}


async def _exchange(bridge: Any, surface: Any, thread: ThreadKey, message: str) -> Any:
    from bridge.relay import Inbound

    surface.begin_exchange()
    try:
        return await bridge.relay.handle(
            Inbound(thread=thread, user=getpass.getuser(), text=message, event_id=None), surface
        )
    finally:
        surface.end_exchange()


async def _prepare_thread(bridge: Any, thread: ThreadKey, agent: str | None) -> None:
    """Pin an explicitly chosen agent to a new thread; refuse to switch an existing one."""
    if agent is None:
        return
    problem = bridge.agent.validate_agent_id(agent)
    if problem:
        raise _fail(f"--agent: {problem}")
    conversation = await bridge.store.get_conversation(thread)
    if conversation is None:
        await bridge.store.start_conversation(thread, agent)
    elif conversation.agent_id != agent:
        raise _fail(
            f"thread {thread.thread!r} already talks to agent {conversation.agent_id}; "
            "use another --thread for a different agent"
        )


@app.command()
def chat(
    message: Annotated[str, typer.Argument(help="The message to send.")],
    agent: Annotated[str | None, typer.Option(help="Agent id (default: AGENT_DEFAULT_ID).")] = None,
    thread: Annotated[
        str | None, typer.Option(help="Terminal thread name; the same name continues the conversation.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final reply as one JSON object.")] = False,
) -> None:
    """Send one message through the full relay to the configured agent API and print the reply."""
    settings = _settings(needs_agent=True)
    raise typer.Exit(_run(lambda: _chat(settings, message, agent, thread, as_json)))


async def _chat(settings: Settings, message: str, agent: str | None, thread: str | None, as_json: bool) -> int:
    from adapters.terminal import TerminalSurface
    from bridge.app import configure_logging, open_bridge

    configure_logging(settings, "WARNING")
    key = ThreadKey("terminal", TERMINAL_WORKSPACE, TERMINAL_CHANNEL, thread or uuid.uuid4().hex)
    console = Console(quiet=as_json)  # with --json, stdout carries only the JSON object
    async with open_bridge(settings) as bridge:
        await _prepare_thread(bridge, key, agent)
        outcome = await _exchange(bridge, TerminalSurface(console), key, message)
    reply = outcome.reply
    if as_json:
        print(json.dumps(reply_json(reply, thread=key.thread, agent_id=outcome.agent_id), default=str))
    if reply is not None and reply.status is ReplyStatus.DONE:
        return 0
    err = Console(stderr=True)
    if reply is not None and reply.error is not None:
        e = reply.error
        err.print(f"error: {e.user_message} ({e.display_code}; trace {e.trace_id or '-'})", markup=False)
        err.print(f"hint: {e.admin_hint}", markup=False)
    elif reply is not None and reply.status is not ReplyStatus.DONE:
        err.print(f"error: the reply ended as {reply.status.value}", markup=False)
    return 1 if reply is None or reply.status is not ReplyStatus.DONE else 0


@app.command()
def demo(
    message: Annotated[
        str | None, typer.Option(help="Run one exchange non-interactively and exit.")
    ] = None,
    dialect: Annotated[Dialect, typer.Option(help="Which upstream dialect the mock agent speaks.")] = Dialect.SENTIENTONE,
) -> None:
    """Token-free demo: a local mock agent, a temporary database, and a chat in this terminal."""
    raise typer.Exit(_run(lambda: _demo(message, dialect)))


async def _demo(message: str | None, dialect: Dialect) -> int:
    from adapters.terminal import TerminalSurface
    from bridge.app import configure_logging, open_bridge
    from bridge.mock_agent import MOCK_TRIGGERS, running_mock_agent

    console = Console()
    with tempfile.TemporaryDirectory(prefix="agent-bridge-demo-") as tmp:
        async with running_mock_agent(host="127.0.0.1", port=0) as base_url:
            settings = load_settings(
                agent_api_url=base_url,
                agent_api_key="demo-key",
                agent_api_dialect=dialect,
                agent_default_id=DEMO_AGENT_IDS[dialect],
                bridge_database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}",
                agent_idle_timeout=30,
            )
            configure_logging(settings, "WARNING")
            async with open_bridge(settings) as bridge:
                thread = ThreadKey("terminal", TERMINAL_WORKSPACE, "demo", uuid.uuid4().hex)
                surface = TerminalSurface(console)
                if message is not None:
                    outcome = await _exchange(bridge, surface, thread, message)
                    return 0 if outcome.ok else 1
                console.print(
                    f"[bold]agent-bridge demo[/] — a mock agent ({dialect.value} dialect) at {base_url}.\n"
                    "Type a message and press Enter; an empty line or Ctrl-D quits. Words that trigger features:"
                )
                for word, meaning in MOCK_TRIGGERS.items():
                    console.print(f"  [cyan]{word}[/] — {meaning}")
                while True:
                    try:
                        line = await asyncio.to_thread(console.input, "[bold green]you>[/] ")
                    except (EOFError, KeyboardInterrupt):
                        break
                    if not line.strip():
                        break
                    await _exchange(bridge, surface, thread, line)
    return 0


PLATFORM_MODULES = {"slack": "adapters.slack", "discord": "adapters.discord"}


def _load_platforms(only: list[str]) -> list[Any]:
    """The configured platforms (all, or the ones named with --platform)."""
    import importlib

    unknown = sorted(set(only) - set(PLATFORM_MODULES))
    if unknown:
        raise _fail(f"--platform: unknown platform {', '.join(unknown)} (choose from {', '.join(PLATFORM_MODULES)})")
    platforms = []
    for name, module in PLATFORM_MODULES.items():
        if only and name not in only:
            continue
        try:
            platform = importlib.import_module(module).load_platform()
        except ConfigError as exc:
            raise _fail(f"configuration: {exc}") from None
        if platform is None and name in only:
            raise _fail(f"--platform {name}: {name.upper()}_BOT_TOKEN is not set")
        if platform is not None:
            platforms.append(platform)
    return platforms


@app.command()
def run(
    platform: Annotated[
        list[str] | None, typer.Option("--platform", help="Start only this platform (repeatable): slack, discord.")
    ] = None,
) -> None:
    """Start the configured chat platforms (Slack, Discord) until SIGTERM/SIGINT."""
    settings = _settings(needs_agent=True)
    platforms = _load_platforms(platform or [])
    if not platforms:
        raise _fail(
            "no chat platform is configured. Set SLACK_BOT_TOKEN (with SLACK_APP_TOKEN for Socket Mode, "
            "or SLACK_SIGNING_SECRET for HTTP mode) for Slack, or DISCORD_BOT_TOKEN for Discord — or try "
            "`agent-bridge demo` for a local, token-free chat."
        )

    async def serve() -> None:
        from bridge.app import configure_logging, open_bridge
        from bridge.platforms import run_platforms

        configure_logging(settings, secrets=[s for p in platforms for s in p.secrets()])
        async with open_bridge(settings) as bridge:
            await run_platforms(bridge, platforms)

    _run(serve)


@app.command(
    "discord",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def discord_commands(ctx: typer.Context) -> None:
    """Discord: `sync-commands [--guild ID]` registers /ask and /agent; `invite-url` prints the invite link."""
    from adapters.discord.cli import (
        app as discord_app,  # imported only when used: discord.py is heavy
    )

    discord_app(args=ctx.args, prog_name="agent-bridge discord")


@app.command("mock-agent")
def mock_agent(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
) -> None:
    """Run a local agent API (both dialects) for development; see the trigger words it knows."""
    from bridge.mock_agent import MOCK_TRIGGERS, serve

    console = Console(stderr=True)
    console.print(f"mock agent on http://{host}:{port} (SentientOne /v1/chat/stream, /v1/chat; thinnest /chat/stream)")
    for word, meaning in MOCK_TRIGGERS.items():
        console.print(f"  {word} — {meaning}", markup=False)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port))


# -- database and bindings -------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (also done at every start)."""
    from bridge.store.migrate import upgrade

    settings = _settings()
    _run(lambda: upgrade(settings.bridge_database_url))
    Console().print("database is up to date")


PlatformOpt = Annotated[str, typer.Option(help="slack, discord or terminal.")]
WorkspaceOpt = Annotated[str, typer.Option(help="Slack team id or Discord guild id.")]
ChannelOpt = Annotated[str, typer.Option(help="Channel id.")]


@app.command()
def bind(
    agent_id: Annotated[str, typer.Argument(help="The agent to answer in this channel.")],
    platform: PlatformOpt,
    workspace: WorkspaceOpt,
    channel: ChannelOpt,
) -> None:
    """Bind a channel to an agent (recorded in the audit log)."""
    settings = _settings()

    async def go() -> None:
        from bridge.agent import AgentClient
        from bridge.store import Store

        async with AgentClient(settings) as agent:
            problem = agent.validate_agent_id(agent_id)
        if problem:
            raise _fail(f"AGENT_ID: {problem}")
        async with await Store.open(settings.bridge_database_url) as store:
            await store.bind(platform, workspace, channel, agent_id, actor=f"cli:{getpass.getuser()}")

    _run(go)
    Console().print(f"{platform} {workspace}/{channel} is now answered by agent {agent_id}", markup=False)


@app.command()
def unbind(platform: PlatformOpt, workspace: WorkspaceOpt, channel: ChannelOpt) -> None:
    """Remove a channel's binding (recorded in the audit log)."""
    settings = _settings()

    async def go() -> bool:
        from bridge.store import Store

        async with await Store.open(settings.bridge_database_url) as store:
            return await store.unbind(platform, workspace, channel, actor=f"cli:{getpass.getuser()}")

    if not _run(go):
        raise _fail(f"{platform} {workspace}/{channel} was not bound", code=1)
    Console().print(f"{platform} {workspace}/{channel} is no longer bound", markup=False)


@app.command()
def bindings(platform: Annotated[str | None, typer.Option(help="Only this platform.")] = None) -> None:
    """List channel bindings."""
    settings = _settings()

    async def go() -> list[Any]:
        from bridge.store import Store

        async with await Store.open(settings.bridge_database_url) as store:
            return await store.list_bindings(platform)

    rows = _run(go)
    console = Console()
    if not rows:
        console.print("no channel is bound yet")
    for b in rows:
        console.print(
            f"{b.platform}\t{b.workspace}/{b.channel}\t{b.agent_id}\tby {b.bound_by} at {b.bound_at:%Y-%m-%d %H:%M}",
            markup=False,
        )


@app.command()
def audit(limit: Annotated[int, typer.Option(help="How many entries.")] = 50) -> None:
    """Show the latest admin actions."""
    settings = _settings()

    async def go() -> list[Any]:
        from bridge.store import Store

        async with await Store.open(settings.bridge_database_url) as store:
            return await store.recent_audit(limit)

    console = Console()
    for e in _run(go):
        console.print(
            f"{e.at:%Y-%m-%d %H:%M:%S}\t{e.actor}\t{e.action}\t{e.platform} {e.workspace}/{e.channel}\t{json.dumps(e.detail)}",
            markup=False,
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
