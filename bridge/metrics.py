"""Prometheus metrics for one Bridge, in a registry of its own (never the global default).

A registry per Bridge keeps tests and several bridges in one process independent, and keeps
module state immutable. Labels are closed sets — reply status, failure code, platform name,
core operation — never channel, user or message ids, so cardinality stays bounded.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bridge.failures import FailureCode

if TYPE_CHECKING:
    from bridge.reply import ReplyState
    from bridge.scheduler import WriterStats

PREFIX = "agent_bridge_"
OUTCOMES = ("done", "failed", "stopped", "interrupted")
PLATFORM_METHODS = ("post", "edit", "stream_start", "stream_append", "stream_stop")
"""The `method` label of platform calls: the core operation, the same for every platform
(Slack's chat.update and Discord's PATCH are both `edit`)."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """Every metric the bridge exports; `render()` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.replies_in_flight = Gauge(
            PREFIX + "replies_in_flight", "Agent replies being streamed or finished right now.", registry=r
        )
        self.replies = Counter(
            PREFIX + "replies", "Agent replies finished, by outcome.", ["status"], registry=r
        )
        self.first_text_latency = Histogram(
            PREFIX + "first_text_latency_seconds",
            "From the upstream's first text delta to that text being visible on the platform.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reply_duration = Histogram(
            PREFIX + "reply_duration_seconds",
            "From the reply's creation (placeholder) to its final state being visible.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.platform_calls = Counter(
            PREFIX + "platform_calls",
            "Calls to a chat platform, by platform and core operation (post, edit, stream_*).",
            ["platform", "method"],
            registry=r,
        )
        self.platform_rate_limited = Counter(
            PREFIX + "platform_rate_limited",
            "Platform calls answered 429 (rate limited), by platform and core operation.",
            ["platform", "method"],
            registry=r,
        )
        self.agent_errors = Counter(
            PREFIX + "agent_errors",
            "Replies that ended with an agent API failure, by failure code (bridge/failures.py).",
            ["code"],
            registry=r,
        )
        for status in OUTCOMES:  # present as 0 from the start, so rates and alerts work at once
            self.replies.labels(status=status)
        for code in FailureCode:
            self.agent_errors.labels(code=code.value)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- hooks the core calls -----------------------------------------------------------

    def platform_call(self, platform: str, method: str) -> None:
        self.platform_calls.labels(platform=platform, method=method).inc()

    def rate_limited(self, platform: str, method: str) -> None:
        self.platform_rate_limited.labels(platform=platform, method=method).inc()

    def reply_started(self) -> ReplyWatch:
        return ReplyWatch(self)


class ReplyWatch:
    """One agent reply from creation to its final state: in-flight gauge, outcome, timings.
    `finished` counts once, however often it is called."""

    __slots__ = ("_metrics", "_started", "_open")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._started = time.monotonic()
        self._open = True
        metrics.replies_in_flight.inc()

    def finished(self, state: ReplyState, stats: WriterStats | None = None) -> None:
        """Record the outcome. `stats` times are the event loop's clock (monotonic, like ours)."""
        if not self._open:
            return
        self._open = False
        m = self._metrics
        m.replies_in_flight.dec()
        status = state.status.value if state.status.value in OUTCOMES else "failed"  # never left streaming
        m.replies.labels(status=status).inc()
        m.reply_duration.observe(max(0.0, time.monotonic() - self._started))
        if state.error is not None:
            m.agent_errors.labels(code=state.error.code.value).inc()
        if stats is not None and stats.first_text_at is not None and stats.first_visible_at is not None:
            m.first_text_latency.observe(max(0.0, stats.first_visible_at - stats.first_text_at))
