"""Relay benchmark: N concurrent replies through the real relay, agent client and store.

The mock agent runs in a separate process (so the CPU we measure is the bridge's own) and
streams real SSE over loopback; replies land on a counting surface that answers each call
after a fixed latency, like a platform API would. Figures per load:

- time from the upstream's first delta reaching the bridge to the first visible text (p50/p99)
- time from the upstream's `done` reaching the bridge to the final text being visible (p50/p99)
- platform calls per reply, bridge CPU time per delta, event-loop lag (p99)
- whether every reply's final visible text equals the agent's full text

Run: `.venv/bin/python -m bench.relay_bench` (add `--write` to update docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.agent import AgentClient
from bridge.app import open_bridge
from bridge.config import load_settings
from bridge.events import AgentEvent, Completed, TextDelta
from bridge.keys import MessageRef, ThreadKey
from bridge.relay import Inbound
from bridge.reply import MessagePart
from bridge.split import unsplit
from bridge.surface import Rate, Scope, SurfaceLimits

AGENT = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
MESSAGE = "tell me a long story"  # the mock's `long` reply: ~5,000 characters in ~80 deltas


@dataclass
class Timing:
    first_delta: float | None = None
    done: float | None = None


@dataclass
class CountingSurface:
    """A platform stand-in: every call takes `latency` seconds; records when text became visible."""

    latency: float
    platform: str = "bench"
    limits: SurfaceLimits = field(
        default_factory=lambda: SurfaceLimits(
            max_text=4000, post=Rate(200, 50, Scope.CHANNEL), edit=Rate(20, 5, Scope.MESSAGE)
        )
    )
    calls: int = 0
    first_visible: dict[str, float] = field(default_factory=dict)
    last_change: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count)

    def render(self, part: MessagePart) -> MessagePart:
        return part

    async def _call(self, message: MessageRef, payload: MessagePart) -> None:
        await asyncio.sleep(self.latency)
        self.calls += 1
        now = time.perf_counter()
        if payload.text:
            self.first_visible.setdefault(message.thread.thread, now)
        self.last_change[message.thread.thread] = now
        self.texts[message.id] = payload.text

    async def post(self, thread: ThreadKey, payload: MessagePart) -> MessageRef:
        message = MessageRef(thread, f"m{next(self._ids)}")
        await self._call(message, payload)
        return message

    async def edit(self, message: MessageRef, payload: MessagePart) -> None:
        await self._call(message, payload)

    async def delete(self, message: MessageRef) -> None:
        self.calls += 1


class TimedAgent(AgentClient):
    """The real client, noting when the first delta and `done` reached the bridge."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timings: dict[str, Timing] = {}
        self.full_texts: dict[str, str] = {}
        self.deltas = 0

    async def stream(self, agent_id: str, message: str, conversation_id: str | None = None) -> AsyncIterator[AgentEvent]:
        timing = self.timings.setdefault(message, Timing())
        async for event in super().stream(agent_id, message, conversation_id):
            now = time.perf_counter()
            if isinstance(event, TextDelta):
                self.deltas += 1
                self.full_texts[message] = self.full_texts.get(message, "") + event.text
                if timing.first_delta is None:
                    timing.first_delta = now
            elif isinstance(event, Completed):
                timing.done = now
            yield event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def mock_agent_process(delta_delay: float) -> AsyncIterator[str]:
    port = free_port()
    code = (
        "import asyncio; from bridge.mock_agent import serve; "
        f"asyncio.run(serve('127.0.0.1', {port}, first_token_delay=0.05, delta_delay={delta_delay}))"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


async def loop_lag(samples: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(period)
        samples.append(max(0.0, time.perf_counter() - start - period))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_load(replies: int, latency: float, url: str, tmp: Path) -> dict[str, float]:
    settings = load_settings(
        agent_api_url=url,
        agent_api_key="bench-key",
        agent_default_id=AGENT,
        bridge_database_url=f"sqlite+aiosqlite:///{tmp / f'bench-{replies}.db'}",
        bridge_user_rate_limit="off",  # one simulated user sends every message
        bridge_channel_rate_limit="off",
    )
    async with open_bridge(settings) as bridge:
        agent = TimedAgent(settings)
        bridge.relay.agent = agent
        surface = CountingSurface(latency)
        warm = Inbound(ThreadKey("bench", "W", "warm", "warm-up"), "U", "warm-up")
        await bridge.relay.handle(warm, CountingSurface(latency))  # connections, caches
        agent.deltas = 0
        lag: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(loop_lag(lag, stop))
        cpu0 = time.process_time()
        outcomes = await asyncio.gather(
            *(
                bridge.relay.handle(
                    Inbound(ThreadKey("bench", "W", f"C{i % 10}", f"t{i}"), "U", f"{MESSAGE} #{i}"), surface
                )
                for i in range(replies)
            )
        )
        cpu = time.process_time() - cpu0
        stop.set()
        await ticker
        await agent.aclose()
    first, final, exact = [], [], 0
    for i, outcome in enumerate(outcomes):
        timing = agent.timings[f"{MESSAGE} #{i}"]
        key = f"t{i}"
        first.append(surface.first_visible[key] - timing.first_delta)
        final.append(surface.last_change[key] - timing.done)
        visible = unsplit([surface.texts[m.id] for m in outcome.messages])
        exact += outcome.ok and visible == outcome.reply.text == agent.full_texts[f"{MESSAGE} #{i}"]
    return {
        "replies": replies,
        "first_p50_ms": 1000 * pct(first, 0.5),
        "first_p99_ms": 1000 * pct(first, 0.99),
        "final_p50_ms": 1000 * pct(final, 0.5),
        "final_p99_ms": 1000 * pct(final, 0.99),
        "calls_per_reply": surface.calls / replies,
        "deltas_per_reply": agent.deltas / replies,
        "cpu_ms_per_reply": 1e3 * cpu / replies,
        "cpu_us_per_delta": 1e6 * cpu / max(agent.deltas, 1),
        "loop_lag_p99_ms": 1000 * pct(lag, 0.99),
        "exact_final_pct": 100.0 * exact / replies,
    }


COLUMNS = [
    ("replies", "concurrent replies", "{:.0f}"),
    ("first_p50_ms", "first text p50 (ms)", "{:.1f}"),
    ("first_p99_ms", "first text p99 (ms)", "{:.1f}"),
    ("final_p50_ms", "final p50 (ms)", "{:.1f}"),
    ("final_p99_ms", "final p99 (ms)", "{:.1f}"),
    ("deltas_per_reply", "deltas / reply", "{:.0f}"),
    ("calls_per_reply", "platform calls / reply", "{:.1f}"),
    ("cpu_ms_per_reply", "bridge CPU / reply (ms)", "{:.1f}"),
    ("cpu_us_per_delta", "bridge CPU / delta (µs)", "{:.0f}"),
    ("loop_lag_p99_ms", "loop lag p99 (ms)", "{:.1f}"),
    ("exact_final_pct", "final text exact (%)", "{:.0f}"),
]


def table(rows: list[dict[str, float]]) -> str:
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join([head, rule, *body])


async def main_async(loads: list[int], latency: float, delta_delay: float) -> list[dict[str, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        async with mock_agent_process(delta_delay) as url:
            for replies in loads:
                rows.append(await run_load(replies, latency, url, Path(tmp)))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


MARK_BEGIN = "<!-- relay-bench:begin -->"
MARK_END = "<!-- relay-bench:end -->"


def write_results(rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    path = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"
    text = path.read_text()
    block = "\n".join(
        [
            MARK_BEGIN,
            f"Latest run: {dt.date.today().isoformat()}, {platform.python_implementation()} "
            f"{platform.python_version()}, {os.cpu_count()} cores; platform call latency "
            f"{args.latency * 1000:.0f} ms, mock delta every {args.delta_delay * 1000:.0f} ms.",
            "",
            table(rows),
            MARK_END,
        ]
    )
    start, end = text.index(MARK_BEGIN), text.index(MARK_END) + len(MARK_END)
    path.write_text(text[:start] + block + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", default="1,10,100", help="comma-separated concurrent reply counts")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per platform call")
    parser.add_argument("--delta-delay", type=float, default=0.03, help="seconds between mock deltas")
    parser.add_argument("--write", action="store_true", help="update docs/PERFORMANCE.md")
    args = parser.parse_args()
    loads = [int(x) for x in args.loads.split(",")]
    print(table([]).rsplit("\n", 0)[0])
    rows = asyncio.run(main_async(loads, args.latency, args.delta_delay))
    if args.write:
        write_results(rows, args)
        print("docs/PERFORMANCE.md updated")


if __name__ == "__main__":
    main()
