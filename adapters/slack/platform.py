"""`agent-bridge run` for Slack: Socket Mode when SLACK_APP_TOKEN is set, HTTP otherwise."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.internals import parse_body
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.events import SlackEvents
from adapters.slack.settings import SlackSettings
from adapters.slack.surface import SlackSurface
from adapters.slack.validate import problem
from bridge.app import Bridge

log = logging.getLogger("adapters.slack")

EVENTS_PATH = "/slack/events"


def make_client(settings: SlackSettings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """A Web API client without slack_sdk's rate-limit retry handler: a 429 must reach the
    core's shared budgets instead of being slept through inside one call. Given a `session`,
    every call reuses its pooled connections (without one, slack_sdk opens a session per call)."""
    return AsyncWebClient(
        token=settings.bot_token,
        base_url=settings.slack_api_url,
        timeout=30,
        session=session,
        retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
    )


@web.middleware
async def _reject_unparsable(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Refuse with 400 what Slack never sends — a body that is not UTF-8, not the JSON / form its
    content type claims, or not shaped like a Slack request — before bolt parses it (bolt and
    our listeners would fail on it instead)."""
    if request.method == "POST":
        try:
            body = parse_body((await request.read()).decode("utf-8"), request.headers.get("Content-Type"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return web.Response(status=400, text="the request body is not what its content type says")
        found = problem(body)
        if found:
            return web.Response(status=400, text=f"not a Slack request: {found}")
    return await handler(request)


class SlackPlatform:
    """Slack for `agent-bridge run`. `url` is the events endpoint once HTTP mode listens."""

    name = "slack"

    def __init__(self, settings: SlackSettings) -> None:
        self.settings = settings
        self.ready = asyncio.Event()
        self.url: str | None = None
        self.events: SlackEvents | None = None
        self.surface: SlackSurface | None = None

    def secrets(self) -> list[str]:
        return self.settings.secrets()

    def build_app(
        self, bridge: Bridge, session: aiohttp.ClientSession | None = None
    ) -> tuple[AsyncApp, SlackEvents]:
        client = make_client(self.settings, session)
        surface = SlackSurface(
            client,
            native=self.settings.slack_native_streaming,
            rate_scale=self.settings.slack_rate_scale,
            command=self.settings.slack_command,
        )
        app = AsyncApp(
            client=client,
            signing_secret=self.settings.signing_secret or None,
            request_verification_enabled=not self.settings.socket_mode,
            logger=logging.getLogger("adapters.slack.bolt"),
        )
        events = SlackEvents(bridge, self.settings, surface, client)
        events.register(app)
        self.surface = surface
        return app, events

    async def run(self, bridge: Bridge, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:  # one connection pool for every Web API call
            app, self.events = self.build_app(bridge, session)
            try:
                if self.settings.socket_mode:
                    await self._run_socket(bridge, app, stop)
                else:
                    await self._run_http(bridge, app, stop)
            finally:
                await self.events.drain()
                self.ready.clear()

    async def _serve_until(self, bridge: Bridge, stop: asyncio.Event) -> None:
        """Until `stop`: take over Slack replies whose replica (or an earlier process) died —
        streaming ones are shown as interrupted, queued ones are answered here."""
        surface = self.surface
        assert surface is not None
        await bridge.relay.keep_recovering(surface.platform, lambda key: surface, stop)

    async def _run_http(self, bridge: Bridge, app: AsyncApp, stop: asyncio.Event) -> None:
        web_app = app.web_app(path=EVENTS_PATH, port=self.settings.bridge_http_port)
        web_app.middlewares.append(_reject_unparsable)
        runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.bridge_http_host, self.settings.bridge_http_port)
            await site.start()
            host, port = runner.addresses[0][:2]
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            self.url = f"http://{shown}:{port}{EVENTS_PATH}"
            log.info("Slack HTTP mode: listening on %s:%s%s", host, port, EVENTS_PATH)
            self.ready.set()
            await self._serve_until(bridge, stop)
        finally:
            await runner.cleanup()

    async def _run_socket(self, bridge: Bridge, app: AsyncApp, stop: asyncio.Event) -> None:
        handler = AsyncSocketModeHandler(app, self.settings.app_token)
        await handler.connect_async()
        log.info("Slack Socket Mode: connected")
        self.ready.set()
        try:
            await self._serve_until(bridge, stop)
        finally:
            await handler.close_async()
