"""The one HTTP server of `agent-bridge run`: operations endpoints plus the platforms' own routes.

`/healthz` (the process is up), `/readyz` (database answers, every platform connected, not
shutting down) and `/metrics` (Prometheus text) share BRIDGE_HTTP_HOST:BRIDGE_HTTP_PORT with
whatever routes a platform contributes (Slack's HTTP mode: `POST /slack/events`), so a load
balancer, a probe and Slack all reach one port. Response bodies name the failed check only:
never a token, never a database URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aiohttp import web

from bridge.config import ConfigError
from bridge.store import StoreUnavailable

if TYPE_CHECKING:
    from bridge.app import Bridge

log = logging.getLogger("bridge.ops_http")

DB_PING_TIMEOUT = 2.0
"""Seconds /readyz waits for the database's `SELECT 1`; below a typical probe timeout."""


@runtime_checkable
class HttpRoutes(Protocol):
    """Optional platform capability: routes served on the shared port (Slack's HTTP mode)."""

    def http_routes(self) -> Sequence[web.RouteDef]:
        """The routes to mount; empty when this platform serves nothing over HTTP."""

    def http_listening(self, base_url: str | None) -> None:
        """Where the shared server listens (`http://host:port`), or None once it stopped."""


@runtime_checkable
class Readiness(Protocol):
    """Optional platform capability: whether its connection is up. Without it a platform
    counts as ready while it runs."""

    async def readiness(self) -> str | None:
        """None when connected; otherwise a short reason (no secrets) for /readyz."""


class OpsServer:
    """Serves the ops endpoints and the platforms' routes; `url` is the bound base URL."""

    def __init__(
        self,
        bridge: Bridge,
        platforms: Sequence[Any] = (),
        *,
        host: str | None = None,
        port: int | None = None,
        ping_timeout: float = DB_PING_TIMEOUT,
    ) -> None:
        self.bridge = bridge
        self.platforms = list(platforms)
        self.host = bridge.settings.bridge_http_host if host is None else host
        self.port = bridge.settings.bridge_http_port if port is None else port
        self.ping_timeout = ping_timeout
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._last_failures: tuple[str, ...] = ()

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
            ]
        )
        for platform in self.platforms:
            if isinstance(platform, HttpRoutes):
                app.add_routes(platform.http_routes())
        return app

    async def start(self) -> str:
        """Bind and listen; returns the base URL actually bound (port 0 becomes a real port)."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"BRIDGE_HTTP_PORT: cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); "
                "free the port or choose another BRIDGE_HTTP_HOST/BRIDGE_HTTP_PORT"
            ) from None
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        if ":" in shown:
            shown = f"[{shown}]"
        self.url = f"http://{shown}:{port}"
        log.info("HTTP server listening on %s:%s (/healthz, /readyz, /metrics)", host, port)
        for platform in self.platforms:
            if isinstance(platform, HttpRoutes):
                platform.http_listening(self.url)
        return self.url

    async def stop(self) -> None:
        for platform in self.platforms:
            if isinstance(platform, HttpRoutes):
                platform.http_listening(None)
        runner, self._runner = self._runner, None
        self.url = None
        if runner is not None:
            await runner.cleanup()

    # -- checks --------------------------------------------------------------------------

    async def failures(self) -> dict[str, str]:
        """Each failed readiness check with a short reason; empty when ready."""
        failed: dict[str, str] = {}
        if not self.bridge.relay.accepting:
            failed["shutdown"] = "draining: finishing replies in flight, taking no new ones"
        try:
            await self.bridge.store.ping(self.ping_timeout)
        except StoreUnavailable as exc:
            failed["database"] = "not answering"
            if "database" not in self._last_failures:
                log.warning("not ready: %s", exc)  # the store's message hides the password
        for platform in self.platforms:
            if isinstance(platform, Readiness):
                try:
                    reason = await platform.readiness()
                except Exception as exc:  # noqa: BLE001 - a broken check means "not ready"
                    log.warning("readiness check of %s failed: %s", platform.name, type(exc).__name__)
                    reason = "check failed"
                if reason is not None:
                    failed[platform.name] = reason
        if tuple(failed) != self._last_failures:
            if failed:
                log.info("readiness: not ready (%s)", ", ".join(f"{k}: {v}" for k, v in failed.items()))
            elif self._last_failures:
                log.info("readiness: ready")
            self._last_failures = tuple(failed)
        return failed

    async def _healthz(self, request: web.Request) -> web.Response:
        """Liveness: answering at all is the proof; no database call, so a slow database
        never gets the process restarted."""
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        failed = await self.failures()
        if failed:
            return web.Response(
                status=503,
                text=json.dumps({"status": "not ready", "failed": failed}),
                content_type="application/json",
            )
        return web.json_response({"status": "ready"})

    async def _metrics(self, request: web.Request) -> web.Response:
        metrics = self.bridge.metrics
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = metrics.content_type
        return response


@contextlib.asynccontextmanager
async def serving(
    bridge: Bridge, platforms: Sequence[Any] = (), *, host: str | None = None, port: int | None = None
) -> AsyncIterator[OpsServer]:
    """An `OpsServer` listening for the duration of the block (BRIDGE_HTTP_HOST/PORT by default)."""
    server = OpsServer(bridge, platforms, host=host, port=port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
