"""Per-user and per-channel message limits that protect the agent budget.

Unlike `bridge.budget` (which makes platform calls *wait* their turn), these answer at once:
a message over the limit is refused with a friendly sentence, since a queue of questions
that arrive faster than they can be answered would only grow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateSpec:
    """`count` messages per `seconds`, written "20/60" in settings."""

    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> RateSpec | None:
        """"N/S" → RateSpec; "off" or "0" → None (no limit). Raises ValueError with the expected form."""
        text = text.strip().lower()
        if text in {"off", "0", "none", ""}:
            return None
        count, _, seconds = text.partition("/")
        try:
            spec = cls(int(count), float(seconds))
        except ValueError:
            raise ValueError("must look like 20/60 (messages per seconds) or off") from None
        if spec.count < 1 or spec.seconds <= 0:
            raise ValueError("must look like 20/60 (messages per seconds) with both numbers positive, or off")
        return spec

    def describe(self) -> str:
        per = {60.0: "minute", 3600.0: "hour", 1.0: "second"}.get(self.seconds, f"{self.seconds:g} seconds")
        return f"{self.count} per {per}"


class MessageLimiter:
    """Token buckets per key (a user, a channel), refilled continuously, pruned when full again."""

    def __init__(self, spec: RateSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self._clock = clock
        self._buckets: dict[object, tuple[float, float]] = {}

    def try_take(self, key: object) -> float:
        """0.0 when the message may go ahead (and is counted); else seconds until it could."""
        now = self._clock()
        rate = self.spec.count / self.spec.seconds
        tokens, stamp = self._buckets.get(key, (float(self.spec.count), now))
        tokens = min(float(self.spec.count), tokens + (now - stamp) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._prune(now, rate)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate

    def _prune(self, now: float, rate: float) -> None:
        if len(self._buckets) < 4096:
            return
        full = [k for k, (t, s) in self._buckets.items() if t + (now - s) * rate >= self.spec.count]
        for key in full:
            del self._buckets[key]
