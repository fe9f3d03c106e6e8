"""Message limits: parsing, refill, independent keys."""

from __future__ import annotations

import pytest

from bridge.limits import MessageLimiter, RateSpec


def test_parse_forms():
    assert RateSpec.parse("20/60") == RateSpec(20, 60.0)
    assert RateSpec.parse("off") is None and RateSpec.parse("0") is None
    assert RateSpec.parse("5/60").describe() == "5 per minute"
    assert RateSpec.parse("5/10").describe() == "5 per 10 seconds"
    for bad in ("lots", "5", "-1/60", "5/0", "a/b"):
        with pytest.raises(ValueError, match="20/60"):
            RateSpec.parse(bad)


def test_refills_over_time_and_keys_are_independent():
    now = [0.0]
    limiter = MessageLimiter(RateSpec(2, 10), clock=lambda: now[0])
    assert limiter.try_take("a") == 0 and limiter.try_take("a") == 0
    wait = limiter.try_take("a")
    assert wait == pytest.approx(5.0)
    assert limiter.try_take("b") == 0
    now[0] = 5.0
    assert limiter.try_take("a") == 0
    assert limiter.try_take("a") > 0
