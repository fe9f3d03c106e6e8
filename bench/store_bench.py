"""The store under many concurrent replies, on a busy event loop.

Each simulated reply makes the store calls a real one makes (claim, queue, conversation,
start, message id, checkpoints, conversation id, finish), all replies at once, while a
"busy" task keeps the loop as occupied as the agent streams of a large load do (it holds the
loop for `--busy-ms` out of every `--every-ms`). Reports wall time, transactions per second,
replies that failed (`StoreUnavailable`) and the loop lag p99.

    .venv/bin/python -m bench.store_bench --replies 1000
    .venv/bin/python -m bench.store_bench --replies 1000 --url postgresql+asyncpg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.keys import ThreadKey
from bridge.reply import ReplyStatus
from bridge.store import Store, StoreUnavailable

CHECKPOINTS = 3


async def one_reply(store: Store, i: int, counts: dict[str, int]) -> None:
    key = ThreadKey("bench", "W1", f"C{i}", f"t{i}")
    try:
        assert await store.claim_event("bench", f"ev{i}")
        queued = await store.enqueue_reply(
            key, owner="bench", lease_until=datetime.now(UTC) + timedelta(seconds=60), inbound={"user": "U", "text": "q"}
        )
        counts["tx"] += 2
        if await store.get_conversation(key) is None:
            await store.get_binding("bench", "W1", key.channel)
            await store.start_conversation(key, "agent")
            counts["tx"] += 3
        await store.start_reply(queued.id, "agent", "bench")
        await store.add_reply_message(queued.id, f"C{i}/m{i}")
        counts["tx"] += 2
        for n in range(CHECKPOINTS):
            await store.checkpoint_reply(queued.id, {"text": "x" * (200 * (n + 1)), "status": "streaming"})
            await asyncio.sleep(0.05)
        await store.set_conversation_id(key, f"conv-{i}")
        await store.finish_reply(queued.id, ReplyStatus.DONE, trace_id="t", owner="bench")
        counts["tx"] += CHECKPOINTS + 2
        counts["ok"] += 1
    except StoreUnavailable:
        counts["failed"] += 1


async def busy(stop: asyncio.Event, busy_ms: float, every_ms: float) -> None:
    """Hold the loop like a CPU-bound load does (no await inside the busy part)."""
    while not stop.is_set():
        end = time.perf_counter() + busy_ms / 1000
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(max(0.0, (every_ms - busy_ms) / 1000))


async def lag_probe(stop: asyncio.Event, samples: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.01)
        samples.append(loop.time() - start - 0.01)


async def run(url: str, replies: int, busy_ms: float, every_ms: float) -> dict[str, float]:
    store = await Store.open(url)
    try:
        counts = {"tx": 0, "ok": 0, "failed": 0}
        stop, lags = asyncio.Event(), []
        helpers = [asyncio.create_task(busy(stop, busy_ms, every_ms)), asyncio.create_task(lag_probe(stop, lags))]
        start = time.perf_counter()
        await asyncio.gather(*(one_reply(store, i, counts) for i in range(replies)))
        wall = time.perf_counter() - start
        stop.set()
        await asyncio.gather(*helpers)
    finally:
        await store.close()
    lags.sort()
    return {
        "replies": replies,
        "wall_s": round(wall, 2),
        "tx_per_s": round(counts["tx"] / wall, 1),
        "failed": counts["failed"],
        "loop_lag_p99_ms": round(lags[int(len(lags) * 0.99) - 1] * 1000, 1) if lags else 0.0,
        "loop_lag_median_ms": round(statistics.median(lags) * 1000, 1) if lags else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--busy-ms", type=float, default=4.0)
    parser.add_argument("--every-ms", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        print(asyncio.run(run(url, args.replies, args.busy_ms, args.every_ms)))


if __name__ == "__main__":
    main()
