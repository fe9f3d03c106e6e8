"""Agent-client micro-benchmark: the CPU the bridge spends per upstream delta in `AgentClient`
alone (HTTP, SSE framing, dialect parsing), without the relay, store or platforms.

Why: in the platform benchmark at 1,000 replies the event loop is CPU-bound and about 40% of
its busy time is SSE reading; this isolates that part so a change to the client can be
measured before and after in seconds, and with far less noise than latency figures.

The mock agent runs in its own process (so its CPU is not counted); every repetition is a
fresh child process that streams N replies at once through `AgentClient.stream` and reports
its process CPU time ÷ the `TextDelta`s received, and how late a 10 ms timer fires (loop lag).

Run: `.venv/bin/python -m bench.agent_client_bench --replies 200 --reps 5`
(`--profile /tmp/prof.txt` writes a pyinstrument report of the first repetition).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from contextlib import aclosing
from typing import Any

from bench.platform_bench import (
    AGENT,
    MESSAGE,
    ROOT,
    pct,
    sampler,
    start_agent,
    stop_process,
)

DIALECTS = {
    # dialect → (agent id, message suffix): the mock's current SentientOne generation, its older
    # generation (selected by an agent id starting with 00000000) and thinnest.
    "sentientone": AGENT,
    "sentientone-old": "00000000-e5f6-7890-abcd-ef1234567890",
    "thinnest": "ag_c47e7c97_b2f2",
}


async def _one(client: Any, agent_id: str, message: str) -> tuple[int, int, bool]:
    from bridge.events import Completed, TextDelta

    deltas = chars = 0
    ok = False
    async with aclosing(client.stream(agent_id, message)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                deltas += 1
                chars += len(event.text)
            elif isinstance(event, Completed):
                ok = True
    return deltas, chars, ok


async def child(url: str, replies: int, dialect: str, message: str, profile: str) -> dict[str, Any]:
    """One repetition, in this (fresh) process."""
    from bridge.agent import AgentClient
    from bridge.config import Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        agent_api_url=url,
        agent_api_key="bench-key",
        agent_api_dialect="thinnest" if dialect == "thinnest" else "sentientone",
        agent_idle_timeout=60.0,
    )
    agent_id = DIALECTS[dialect]
    async with AgentClient(settings) as client:
        await _one(client, agent_id, "warm up")  # connection set-up, imports, caches: not counted
        lag: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(sampler(lag, [], stop))
        profiler = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001, async_mode="disabled")
            profiler.start()
        cpu0, wall0 = time.process_time(), time.monotonic()
        results = await asyncio.gather(*(_one(client, agent_id, f"{message} #{i}") for i in range(replies)))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        if profiler is not None:
            profiler.stop()
            with open(profile, "w") as f:
                f.write(profiler.output_text(unicode=True, show_all=False))
        stop.set()
        await ticker
    deltas = sum(d for d, _, _ in results)
    return {
        "replies": replies,
        "dialect": dialect,
        "deltas_per_reply": deltas / replies,
        "chars_per_reply": sum(c for _, c, _ in results) / replies,
        "completed_pct": 100.0 * sum(ok for _, _, ok in results) / replies,
        "cpu_us_per_delta": 1e6 * cpu / max(deltas, 1),
        "loop_lag_p50_ms": 1e3 * pct(lag, 0.5),
        "loop_lag_p99_ms": 1e3 * pct(lag, 0.99),
        "wall_s": wall,
    }


def run_child(url: str, replies: int, dialect: str, message: str, profile: str) -> dict[str, Any]:
    payload = json.dumps([url, replies, dialect, message, profile])
    done = subprocess.run(
        [sys.executable, "-m", "bench.agent_client_bench", "--child", payload],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"run failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=200, help="concurrent replies (the client's pool holds 200)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (each a fresh process); the median is reported")
    parser.add_argument("--dialects", default="sentientone", help=f"comma-separated, of {', '.join(DIALECTS)}")
    parser.add_argument("--message", default=MESSAGE, help="the mock's reply depends on it (`long`: ~5,000 characters)")
    parser.add_argument("--first-token-delay", type=float, default=0.15)
    parser.add_argument("--delta-delay", type=float, default=0.03)
    parser.add_argument("--profile", default="", help="pyinstrument the first repetition into this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(*json.loads(args.child)))), flush=True)
        return
    proc, url = start_agent(args.first_token_delay, args.delta_delay)
    try:
        for dialect in args.dialects.split(","):
            rows = [
                run_child(url, args.replies, dialect, args.message, args.profile if rep == 0 else "")
                for rep in range(args.reps)
            ]
            for row in rows:
                print(json.dumps(row), flush=True)
            runs = ", ".join(f"{r['cpu_us_per_delta']:.0f}" for r in rows)
            med = {k: statistics.median(r[k] for r in rows) for k in ("cpu_us_per_delta", "loop_lag_p99_ms", "wall_s")}
            print(
                f"{dialect}: {args.replies} replies × {args.reps}: CPU/delta median "
                f"{med['cpu_us_per_delta']:.0f} µs (runs: {runs}); "
                f"loop lag p99 median {med['loop_lag_p99_ms']:.1f} ms; "
                f"{rows[0]['deltas_per_reply']:.0f} deltas/reply; completed "
                f"{min(r['completed_pct'] for r in rows):.0f}%; wall median {med['wall_s']:.1f} s",
                flush=True,
            )
    finally:
        stop_process(proc)


if __name__ == "__main__":
    main()
