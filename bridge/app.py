"""Wiring: settings → store (migrated) → agent client → relay (+ metrics), opened and closed together."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from bridge import logs
from bridge.agent import AgentClient
from bridge.config import Settings
from bridge.metrics import Metrics
from bridge.relay import Relay
from bridge.store import Store


@dataclass(frozen=True, slots=True)
class Bridge:
    settings: Settings
    store: Store
    agent: AgentClient
    relay: Relay
    metrics: Metrics
    """This bridge's Prometheus registry (served on /metrics by `agent-bridge run`)."""


@contextlib.asynccontextmanager
async def open_bridge(settings: Settings) -> AsyncIterator[Bridge]:
    """Open every long-lived resource once; close them in reverse order."""
    store = await Store.open(settings.bridge_database_url)
    metrics = Metrics()
    try:
        async with AgentClient(settings) as agent:
            relay = Relay(store, agent, settings, metrics=metrics)
            try:
                yield Bridge(settings, store, agent, relay, metrics)
            finally:
                await relay.close()
    finally:
        await store.close()


def configure_logging(settings: Settings, level: str | None = None, *, secrets: Sequence[str] = ()) -> None:
    """Log to stderr (text or JSON, BRIDGE_LOG_FORMAT) with every secret this process knows
    — the settings' and `secrets` — redacted."""
    logs.configure_logging(
        level or settings.bridge_log_level, settings.bridge_log_format, secrets=[*settings.secrets(), *secrets]
    )
