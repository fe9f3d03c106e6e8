"""How long to wait before resending a request that never produced an event.

Pure functions, so the policy is testable without a clock: `Retry-After` parsing (both
forms RFC 9110 allows) and capped exponential backoff with jitter.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
JITTER = 0.25


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 850/asctime forms parse naive; HTTP dates are GMT
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def backoff_delay(retry: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number `retry` (0-based): 0.5 s · 2^n, ±25 % jitter, at most 8 s."""
    base = min(BACKOFF_CAP, BACKOFF_BASE * (2**retry))
    jittered = base * (1 + JITTER * (2 * rand() - 1))
    return min(BACKOFF_CAP, max(0.0, jittered))


def retry_delay(retry: int, retry_after: float | None, cap: float) -> float:
    """The server's `Retry-After` when it sent one (capped), else backoff."""
    if retry_after is not None:
        return min(retry_after, cap)
    return backoff_delay(retry)
