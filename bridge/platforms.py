"""What `agent-bridge run` needs from each chat platform adapter, and running them together.

An adapter package offers `load_platform() -> Platform | None`: None when its token is not
set (the platform is simply off), `ConfigError` when it is set but incomplete or malformed.
Optional capabilities (`bridge.ops_http`): `HttpRoutes` (routes on the shared HTTP port) and
`Readiness` (whether the platform's connection is up, for /readyz).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Protocol

from bridge.app import Bridge
from bridge.ops_http import serving

log = logging.getLogger("bridge.platforms")


class Platform(Protocol):
    name: str

    def secrets(self) -> list[str]:
        """Tokens this platform holds, so logs can redact them."""

    async def run(self, bridge: Bridge, stop: asyncio.Event) -> None:
        """Connect and serve until `stop` is set, then disconnect cleanly and return."""


async def run_platforms(
    bridge: Bridge, platforms: Sequence[Platform], shutdown: asyncio.Event | None = None
) -> None:
    """Run every platform until SIGTERM/SIGINT (or `shutdown`), then shut down gracefully.

    Graceful means: the relay takes no new messages and lets in-flight replies finish within
    BRIDGE_SHUTDOWN_GRACE, interrupting (and saying so in) the rest — while the platforms are
    still connected to show it; only then are the platforms told to stop. If one platform fails,
    the others are shut down the same way and its error is raised.

    The HTTP server (/healthz, /readyz, /metrics and the platforms' routes) listens on
    BRIDGE_HTTP_HOST:BRIDGE_HTTP_PORT before the platforms start and stops after them; during
    the drain /readyz answers 503 so a load balancer stops sending.
    """
    shutdown = shutdown or asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, shutdown.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not supported
            pass
    waiting: asyncio.Task[bool] | None = None
    try:
        async with serving(bridge, platforms):
            waiting = asyncio.create_task(shutdown.wait())
            await _run_until_shutdown(bridge, platforms, stop, waiting)
    finally:
        if waiting is not None:
            waiting.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass


async def _run_until_shutdown(
    bridge: Bridge, platforms: Sequence[Platform], stop: asyncio.Event, waiting: asyncio.Task[bool]
) -> None:
    tasks = [asyncio.create_task(p.run(bridge, stop), name=f"platform {p.name}") for p in platforms]
    log.info("running platforms: %s", ", ".join(p.name for p in platforms))
    try:
        await asyncio.wait([*tasks, waiting], return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down: finishing %d replies in flight", bridge.relay.in_flight)
        await bridge.relay.drain()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        for task in tasks:
            task.cancel()  # only still running when we ourselves are being cancelled
