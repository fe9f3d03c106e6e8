"""Token buckets: rate, burst, priority, fairness, 429 penalties and cancellation."""

from __future__ import annotations

import asyncio

from bridge.budget import Budgets, Priority, TokenBucket
from bridge.keys import ThreadKey
from bridge.surface import Rate, Scope


async def test_burst_then_rate():
    bucket = TokenBucket(Rate(per_second=20, burst=3))
    loop = asyncio.get_running_loop()
    start = loop.time()
    times = []
    for _ in range(7):
        await bucket.acquire(Priority.URGENT)
        times.append(loop.time() - start)
    assert all(t < 0.02 for t in times[:3])  # the burst is free
    # the remaining four come at ~20/s
    assert times[-1] >= 4 / 20 - 0.02


async def test_normal_priority_leaves_a_token_for_urgent_calls():
    bucket = TokenBucket(Rate(per_second=1, burst=3))
    await bucket.acquire(Priority.NORMAL)
    await bucket.acquire(Priority.NORMAL)
    normal = asyncio.create_task(bucket.acquire(Priority.NORMAL))
    await asyncio.sleep(0.01)
    assert not normal.done()  # the last token is reserved
    await asyncio.wait_for(bucket.acquire(Priority.URGENT), 0.05)
    normal.cancel()


async def test_waiters_are_served_by_priority_then_arrival():
    bucket = TokenBucket(Rate(per_second=50, burst=1))
    await bucket.acquire(Priority.URGENT)  # empty it
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await bucket.acquire(priority)
        order.append(name)

    tasks = [
        asyncio.create_task(take("n1", Priority.NORMAL)),
        asyncio.create_task(take("n2", Priority.NORMAL)),
        asyncio.create_task(take("u1", Priority.URGENT)),
    ]
    await asyncio.gather(*tasks)
    assert order == ["u1", "n1", "n2"]


async def test_penalty_blocks_until_retry_after():
    bucket = TokenBucket(Rate(per_second=100, burst=10))
    loop = asyncio.get_running_loop()
    bucket.penalize(0.15)
    start = loop.time()
    await bucket.acquire(Priority.URGENT)
    assert loop.time() - start >= 0.14
    assert bucket.penalties == 1


async def test_cancelled_waiter_takes_nothing():
    bucket = TokenBucket(Rate(per_second=20, burst=1))
    await bucket.acquire(Priority.URGENT)
    waiter = asyncio.create_task(bucket.acquire(Priority.URGENT))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.wait_for(bucket.acquire(Priority.URGENT), 0.2)
    assert bucket.granted == 2


async def test_scopes_share_or_separate_buckets():
    budgets = Budgets()
    a = ThreadKey("slack", "T1", "C1", "1")
    b = ThreadKey("slack", "T1", "C2", "2")
    other = ThreadKey("slack", "T2", "C1", "3")
    ws = Rate(1, 1, Scope.WORKSPACE)
    ch = Rate(1, 1, Scope.CHANNEL)
    assert budgets.bucket("slack", "edit", ws, a) is budgets.bucket("slack", "edit", ws, b)
    assert budgets.bucket("slack", "edit", ws, a) is not budgets.bucket("slack", "edit", ws, other)
    assert budgets.bucket("slack", "post", ch, a) is not budgets.bucket("slack", "post", ch, b)
    msg = Rate(1, 1, Scope.MESSAGE)
    budgets.bucket("slack", "edit", msg, a, "m1")
    before = budgets.stats()["buckets"]
    budgets.forget_message("slack", "m1")
    assert budgets.stats()["buckets"] == before - 1
