"""What `agent-bridge run` needs from each chat platform adapter, and running them together.

An adapter package offers `load_platform() -> Platform | None`: None when its token is not
set (the platform is simply off), `ConfigError` when it is set but incomplete or malformed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Protocol

from bridge.app import Bridge

log = logging.getLogger("bridge.platforms")


class Platform(Protocol):
    name: str

    def secrets(self) -> list[str]:
        """Tokens this platform holds, so logs can redact them."""

    async def run(self, bridge: Bridge, stop: asyncio.Event) -> None:
        """Connect and serve until `stop` is set, then disconnect cleanly and return."""


async def run_platforms(bridge: Bridge, platforms: Sequence[Platform], stop: asyncio.Event | None = None) -> None:
    """Run every platform until SIGTERM/SIGINT (or `stop`); if one fails, stop the others."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not supported
            pass
    tasks = [asyncio.create_task(p.run(bridge, stop), name=f"platform {p.name}") for p in platforms]
    log.info("running platforms: %s", ", ".join(p.name for p in platforms))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stopping.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
