"""`agent-bridge run` for Slack: Socket Mode when SLACK_APP_TOKEN is set, HTTP otherwise.

HTTP mode does not open a port of its own: it contributes `POST /slack/events` to the core's
HTTP server (`bridge.ops_http`, BRIDGE_HTTP_HOST:BRIDGE_HTTP_PORT), next to /healthz, /readyz
and /metrics.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
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
from bridge.ops_http import serving

log = logging.getLogger("adapters.slack")

EVENTS_PATH = "/slack/events"
APP_WAIT = 10.0
"""Seconds a request that arrives while the platform is still starting waits for it."""


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


async def _reject_unparsable(request: web.Request) -> web.Response | None:
    """Refuse with 400 what Slack never sends — a body that is not UTF-8, not the JSON / form its
    content type claims, or not shaped like a Slack request — before bolt parses it (bolt and
    our listeners would fail on it instead). None when the body may go on to bolt."""
    try:
        body = parse_body((await request.read()).decode("utf-8"), request.headers.get("Content-Type"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return web.Response(status=400, text="the request body is not what its content type says")
    found = problem(body)
    if found:
        return web.Response(status=400, text=f"not a Slack request: {found}")
    return None


class SlackPlatform:
    """Slack for `agent-bridge run`. `url` is the events endpoint once HTTP mode listens;
    `ready` is set once Slack can reach us (HTTP: listening; Socket Mode: connected)."""

    name = "slack"

    def __init__(self, settings: SlackSettings) -> None:
        self.settings = settings
        self.ready = asyncio.Event()
        self.url: str | None = None
        self.events: SlackEvents | None = None
        self.surface: SlackSurface | None = None
        self._app: AsyncApp | None = None
        self._app_built = asyncio.Event()
        """Set once `run` built the bolt app — and again when it stopped (`_app` then None), so
        a request waits only while the platform is starting."""
        self._base_url: str | None = None
        """The shared HTTP server's address, when one serves our routes (see `http_routes`)."""
        self._socket: AsyncSocketModeHandler | None = None

    def secrets(self) -> list[str]:
        return self.settings.secrets()

    # -- capabilities for the core's HTTP server (bridge.ops_http) -------------------------

    def http_routes(self) -> list[web.RouteDef]:
        return [] if self.settings.socket_mode else [web.post(EVENTS_PATH, self._handle_events)]

    def http_listening(self, base_url: str | None) -> None:
        self._base_url = base_url

    async def readiness(self) -> str | None:
        if not self.ready.is_set():
            return "not connected" if self.settings.socket_mode else "not serving events yet"
        if self._socket is not None and not await self._socket.client.is_connected():
            return "Socket Mode connection down (reconnecting)"
        return None

    async def _handle_events(self, request: web.Request) -> web.Response:
        """Slack's events, commands and actions, handed to bolt (which verifies the signature)."""
        rejected = await _reject_unparsable(request)
        if rejected is not None:
            return rejected
        if not self._app_built.is_set():  # only while starting: no extra hop per request
            try:
                await asyncio.wait_for(self._app_built.wait(), APP_WAIT)
            except TimeoutError:
                pass
        app = self._app
        if app is None:
            return web.Response(status=503, text="Slack is not running in this process")
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

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
                elif self._base_url is None:  # run on its own (not by run_platforms): serve ourselves
                    async with serving(bridge, [self]):
                        await self._run_http(bridge, app, stop)
                else:
                    await self._run_http(bridge, app, stop)
            finally:
                self.ready.clear()
                self._app = None
                self._app_built.set()  # requests from now on: 503 at once (Slack retries elsewhere)
                await self.events.drain()
                self._app_built.clear()

    async def _serve_until(self, bridge: Bridge, stop: asyncio.Event) -> None:
        """Until `stop`: take over Slack replies whose replica (or an earlier process) died —
        streaming ones are shown as interrupted, queued ones are answered here."""
        surface = self.surface
        assert surface is not None
        await bridge.relay.keep_recovering(surface.platform, lambda key: surface, stop)

    async def _run_http(self, bridge: Bridge, app: AsyncApp, stop: asyncio.Event) -> None:
        """Serve events through the shared HTTP server, which already listens."""
        assert self._base_url is not None
        self.url = f"{self._base_url}{EVENTS_PATH}"
        self._app = app
        self._app_built.set()
        log.info("Slack HTTP mode: serving %s", self.url)
        self.ready.set()
        await self._serve_until(bridge, stop)

    async def _run_socket(self, bridge: Bridge, app: AsyncApp, stop: asyncio.Event) -> None:
        handler = AsyncSocketModeHandler(app, self.settings.app_token)
        await handler.connect_async()
        log.info("Slack Socket Mode: connected")
        self._socket = handler
        self.ready.set()
        try:
            await self._serve_until(bridge, stop)
        finally:
            self._socket = None
            await handler.close_async()
