"""Platform benchmark: our scheduler against a 1-second timer editor and a per-20-chunk editor,
on the Slack and Discord fakes that enforce the documented limits with real 429s.

Every run is one child process (clean CPU, RSS and event-loop figures) that talks to
- the mock agent, in its own process (started once), streaming real SSE over loopback;
- a fake platform (`bench/fake_platforms.py`), in its own process, fresh for every run.

Editors, all driving the real adapters' surfaces (`SlackSurface` over slack_sdk's
`AsyncWebClient`; `DiscordSurface` over `DiscordRest`) through the same recording wrapper:
- `ours`: the real relay (`Relay.handle`: SQLite store, `ReplyWriter`, shared `Budgets`);
- `timer`: one edit per second per reply with the latest text, no shared budget;
- `chunk20`: an edit every 20 deltas.
The baselines sleep out every 429's Retry-After and retry, as naive bots do, so they finish
with the full text too; they skip the database (so they do less work per reply than ours).

Layouts: `spread` (one reply per channel) and `one` (every reply in one channel). The Slack
fake is one workspace, so `chat.update` is shared by every reply in both layouts (Slack's
limit is per workspace); Discord budgets are per channel.

Scaled window: with `--scale auto` a load of N runs with the platform window shortened
max(1, N/10)-fold — the fakes and the adapters' declared limits are sped up by the same
factor (`slack_limits(scale)`; Discord: 0.9·scale/s), the agent is not.

Run: `.venv/bin/python -m bench.platform_bench --loads 1,100,1000` (`--write` updates
docs/PERFORMANCE.md; `--help` for the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform as platform_mod
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AGENT = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
MESSAGE = "markdown help please"  # the mock's reply: ~900 characters in ~55 deltas, one message on both platforms
EDITORS = ("ours", "timer", "chunk20")
TIMER_PERIOD = 1.0
CHUNK_EVERY = 20


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Record:
    """What one reply's calls did, as seen from the bridge."""

    calls: int = 0
    refused: int = 0
    raised: str = ""
    cut: bool = False
    """The run's `--max-run` limit ended the load before this reply finished (it was cancelled)."""
    """What `Relay.handle` raised, if it did (it promises not to)."""
    """Calls the platform refused (429s and errors): `calls - refused` were accepted."""
    first_visible: float | None = None
    first_call_started: float | None = None
    last_returned: float | None = None
    first_delta: float | None = None
    done: float | None = None
    full_text: str = ""
    deltas: int = 0
    sent_text: dict[str, str] = field(default_factory=dict)
    """message key → the part text last made visible there (in order of posting)."""
    sent_payload: dict[str, str] = field(default_factory=dict)
    """message key → the platform text of that payload (mrkdwn on Slack, content on Discord)."""


def _payload_text(payload: Any) -> str:
    return getattr(payload, "content", None) if hasattr(payload, "content") else payload.text


class Recording:
    """Wraps a real surface; notes when text became visible and what each message shows."""

    def __init__(self, inner: Any, record: Record, limits: Any) -> None:
        self.inner = inner
        self.record = record
        self.platform = inner.platform
        self.limits = limits
        self.bind_hint = getattr(inner, "bind_hint", "")

    def render(self, part: Any) -> tuple[Any, Any]:
        return part, self.inner.render(part)

    def _seen(self, started: float, ref: Any, part: Any, payload: Any) -> None:
        now = time.monotonic()
        record = self.record
        record.last_returned = now
        key = f"{ref.channel or ref.thread.channel}/{ref.id}"
        record.sent_text[key] = part.text
        record.sent_payload[key] = _payload_text(payload)
        if part.text and record.first_visible is None:
            record.first_visible = now
            record.first_call_started = started

    async def post(self, thread: Any, payload: tuple[Any, Any]) -> Any:
        part, real = payload
        self.record.calls += 1
        started = time.monotonic()
        try:
            ref = await self.inner.post(thread, real)
        except Exception:
            self.record.refused += 1
            raise
        self._seen(started, ref, part, real)
        return ref

    async def edit(self, message: Any, payload: tuple[Any, Any]) -> None:
        part, real = payload
        self.record.calls += 1
        started = time.monotonic()
        try:
            await self.inner.edit(message, real)
        except Exception:
            self.record.refused += 1
            raise
        self._seen(started, message, part, real)

    async def delete(self, message: Any) -> None:
        self.record.calls += 1
        await self.inner.delete(message)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def sampler(lag: list[float], rss: list[int], stop: asyncio.Event, period: float = 0.01) -> None:
    n = 0
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(period)
        lag.append(max(0.0, time.perf_counter() - start - period))
        n += 1
        if n % 10 == 0:
            rss.append(rss_bytes())


# -- processes -----------------------------------------------------------------------------------


def _wait_ready(proc: subprocess.Popen[str]) -> int:
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"fake platform did not start: {line!r}")
    return int(line.split()[1])


def start_fake(kind: str, scale: float, channels: list[str], tmp: Path) -> tuple[subprocess.Popen[str], str]:
    listing = tmp / f"channels-{kind}.txt"
    listing.write_text("\n".join(channels))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_platforms", kind, "--scale", str(scale), "--channels", f"@{listing}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    port = _wait_ready(proc)
    return proc, f"http://127.0.0.1:{port}"


def start_agent(first_token_delay: float, delta_delay: float) -> tuple[subprocess.Popen[str], str]:
    code = (
        "import asyncio, socket\n"
        "from aiohttp import web\n"
        "from bridge.mock_agent import create_app\n"
        "async def main():\n"
        f"    runner = web.AppRunner(create_app(first_token_delay={first_token_delay}, delta_delay={delta_delay}), access_log=None)\n"
        "    await runner.setup()\n"
        "    site = web.TCPSite(runner, '127.0.0.1', 0, backlog=4096)\n"
        "    await site.start()\n"
        "    print('ready', runner.addresses[0][1], flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    port = _wait_ready(proc)
    return proc, f"http://127.0.0.1:{port}"


def stop_process(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def fake_state(base: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{base}/bench/state") as response:
        return await response.json()


# -- one run (in the child process) ---------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    platform: str
    layout: str
    load: int
    editor: str
    scale: float
    agent_url: str
    deltas: str = "words"
    """`words`: re-emit each mock delta as word-sized deltas (token streaming); `mock`: as sent."""
    profile: str = ""
    """When set: pyinstrument the load and write its text report to this path (slows every figure)."""
    trace_memory: float = 0.0
    """When > 0: tracemalloc during the load, a snapshot this many seconds in (slows everything)."""
    max_run: float = 0.0
    """When > 0: the load is stopped this many seconds after it started; unfinished replies are
    cancelled and reported as cut off (see `gather_bounded`)."""

    def channels(self) -> list[str]:
        count = self.load if self.layout == "spread" else 1
        if self.platform == "slack":
            return [f"C{i:06d}" for i in range(count)]
        return [str(900000000000000000 + i) for i in range(count)]


def _scaled_discord_limits(scale: float) -> Any:
    from adapters.discord.surface import LIMITS
    from bridge.surface import Rate, SurfaceLimits

    return SurfaceLimits(
        max_text=LIMITS.max_text,
        post=Rate(LIMITS.post.per_second * scale, LIMITS.post.burst, LIMITS.post.scope),
        edit=Rate(LIMITS.edit.per_second * scale, LIMITS.edit.burst, LIMITS.edit.scope),
    )


class Surfaces:
    """Builds, per reply, the real adapter's surface pointed at the fake, wrapped for recording."""

    def __init__(self, spec: Spec, base: str) -> None:
        self.spec = spec
        self.base = base
        self._closers: list[Any] = []

    async def __aenter__(self) -> Surfaces:
        if self.spec.platform == "slack":
            from slack_sdk.http_retry.builtin_async_handlers import (
                AsyncConnectionErrorRetryHandler,
            )
            from slack_sdk.web.async_client import AsyncWebClient

            from adapters.slack.settings import NativeStreaming
            from adapters.slack.surface import SlackSurface
            from tests.slack_fake import BOT_TOKEN

            # as adapters/slack/platform.py's make_client builds it
            client = AsyncWebClient(
                token=BOT_TOKEN,
                base_url=f"{self.base}/api/",
                timeout=30,
                retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
            )
            self.slack = SlackSurface(client, native=NativeStreaming.OFF, rate_scale=self.spec.scale)
        else:
            from adapters.discord.rest import DiscordRest
            from tests.discord_fake import BOT_TOKEN

            self.rest = DiscordRest(f"{self.base}/api/v10", BOT_TOKEN, timeout=120)
            await self.rest.__aenter__()
            self._closers.append(self.rest)
            self.discord_limits = _scaled_discord_limits(self.spec.scale)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for closer in self._closers:
            await closer.__aexit__(None, None, None)

    def thread(self, i: int) -> Any:
        from bridge.keys import ThreadKey

        channels = self.spec.channels()
        channel = channels[i % len(channels)]
        if self.spec.platform == "slack":
            return ThreadKey("slack", "T0001", channel, f"1600000000.{i:06d}")
        return ThreadKey("discord", "222", channel, str(800000000000000000 + i))

    def surface(self, i: int, record: Record) -> Recording:
        if self.spec.platform == "slack":
            return Recording(self.slack, record, self.slack.limits)
        from adapters.discord.surface import DiscordSurface

        thread = self.thread(i)
        inner = DiscordSurface(self.rest, thread.channel, thread=thread, asker="444")
        inner.limits = self.discord_limits
        return Recording(inner, record, self.discord_limits)


def _settings(spec: Spec, tmp: Path) -> Any:
    from bridge.config import load_settings

    return load_settings(
        agent_api_url=spec.agent_url,
        agent_api_key="bench-key",
        agent_default_id=AGENT,
        bridge_database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        bridge_user_rate_limit="off",
        bridge_channel_rate_limit="off",
        bridge_log_level="WARNING",
    )


def _timed_agent_class() -> Any:
    from bridge.agent import AgentClient
    from bridge.events import Completed, TextDelta

    class TimedAgent(AgentClient):
        """The real client, noting when the first delta and `done` reached the bridge. With
        `words`, each upstream delta is passed on as word-sized deltas, as token-streaming
        APIs deliver them (the mock's deltas carry ~13 characters, about four tokens)."""

        records: dict[str, Record]
        words: bool = True

        async def stream(self, agent_id: str, message: str, conversation_id: str | None = None) -> AsyncIterator[Any]:
            record = self.records.get(message)
            async for event in super().stream(agent_id, message, conversation_id):
                if isinstance(event, TextDelta) and self.words:
                    pieces = [TextDelta(w) for w in _WORDS.findall(event.text)] or [event]
                else:
                    pieces = [event]
                for piece in pieces:
                    if record is not None:
                        if isinstance(piece, TextDelta):
                            record.deltas += 1
                            record.full_text += piece.text
                            if record.first_delta is None:
                                record.first_delta = time.monotonic()
                        elif isinstance(piece, Completed):
                            record.done = time.monotonic()
                    yield piece

    return TimedAgent


_WORDS = re.compile(r"\S+\s*|\s+")


async def _run_ours(spec: Spec, surfaces: Surfaces, records: list[Record], tmp: Path, started: asyncio.Event, go: asyncio.Event) -> list[bool]:
    from bridge.app import open_bridge
    from bridge.relay import Inbound

    settings = _settings(spec, tmp)
    async with open_bridge(settings) as bridge:
        agent = _timed_agent_class()(settings)
        agent.records = {}
        agent.words = spec.deltas == "words"
        bridge.relay.agent = agent
        # warm-up: connections, caches, the database file (not counted)
        warm = Record()
        await bridge.relay.handle(
            Inbound(surfaces.thread(spec.load + 1), "U", "warm up"),
            surfaces.surface(spec.load + 1, warm),
        )
        for i, record in enumerate(records):
            agent.records[f"{MESSAGE} #{i}"] = record
        started.set()
        await go.wait()
        outcomes = await gather_bounded(
            [
                bridge.relay.handle(Inbound(surfaces.thread(i), f"U{i}", f"{MESSAGE} #{i}"), surfaces.surface(i, records[i]))
                for i in range(spec.load)
            ],
            records,
            spec.max_run,
        )
        await agent.aclose()
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException) and not records[i].cut:
            records[i].raised = f"{type(outcome).__module__}.{type(outcome).__name__}: {str(outcome)[:120]}"
    return [not isinstance(o, BaseException) and o.ok for o in outcomes]


async def gather_bounded(coros: list[Any], records: list[Record], max_run: float) -> list[Any]:
    """Like `gather(..., return_exceptions=True)`, but with `max_run` > 0 the replies still
    running after that many seconds are cancelled and marked `cut` (their figures so far are
    kept; they count as not exact). Why: at 1,000 replies the baselines' 429 storms make a run
    last many minutes; a bounded run still measures what they do, on the replies that finished."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if max_run > 0:
        _, pending = await asyncio.wait(tasks, timeout=max_run)
        for i, task in enumerate(tasks):
            if task in pending:
                records[i].cut = True
                task.cancel()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def _naive_reply(editor: str, agent: Any, surface: Recording, thread: Any, text: str, record: Record) -> bool:
    """A naive bot: placeholder, then edits on a timer or every N chunks; 429 → sleep Retry-After."""
    from bridge.events import Completed, Failed, TextDelta
    from bridge.reply import MessagePart, ReplyState
    from bridge.split import StableSplitter
    from bridge.surface import RateLimited

    state = ReplyState()
    splitter = StableSplitter(surface.limits.max_text)
    messages: list[Any] = []
    sent: list[str | None] = []
    lock = asyncio.Lock()

    async def call(fn: Any, *args: Any) -> Any:
        while True:
            try:
                return await fn(*args)
            except RateLimited as exc:
                await asyncio.sleep(exc.retry_after)

    async def sync() -> None:
        async with lock:
            reply = state.snapshot()
            parts = splitter.split(reply.text) if reply.text else [""]
            for i, part_text in enumerate(parts):
                last = i == len(parts) - 1
                part = MessagePart(reply, part_text, i, last)
                if i < len(messages):
                    if sent[i] == part_text and not (last and reply.status.finished):
                        continue
                    await call(surface.edit, messages[i], surface.render(part))
                    sent[i] = part_text
                else:
                    messages.append(await call(surface.post, thread, surface.render(part)))
                    sent.append(part_text)

    await sync()  # the placeholder
    ticker: asyncio.Task[None] | None = None
    if editor == "timer":

        async def tick() -> None:
            while True:
                await asyncio.sleep(TIMER_PERIOD)
                await sync()

        ticker = asyncio.create_task(tick())
    deltas = 0
    try:
        async for event in agent.stream(AGENT, text):  # timed by the agent (TimedAgent)
            state.apply(event)
            if isinstance(event, TextDelta):
                deltas += 1
                if editor == "chunk20" and deltas % CHUNK_EVERY == 0:
                    await sync()
            elif isinstance(event, Completed | Failed):
                break
    finally:
        if ticker is not None:
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                pass
    await sync()  # the final state
    return state.snapshot().status.value == "done"


async def _run_baseline(spec: Spec, surfaces: Surfaces, records: list[Record], tmp: Path, started: asyncio.Event, go: asyncio.Event) -> list[bool]:
    settings = _settings(spec, tmp)
    async with _timed_agent_class()(settings) as agent:
        agent.words = spec.deltas == "words"
        agent.records = {f"{MESSAGE} #{i}": record for i, record in enumerate(records)}
        await _naive_reply(spec.editor, agent, surfaces.surface(spec.load + 1, Record()), surfaces.thread(spec.load + 1), "warm up", Record())
        started.set()
        await go.wait()
        outcomes = await gather_bounded(
            [
                _naive_reply(spec.editor, agent, surfaces.surface(i, records[i]), surfaces.thread(i), f"{MESSAGE} #{i}", records[i])
                for i in range(spec.load)
            ],
            records,
            spec.max_run,
        )
    for outcome, record in zip(outcomes, records, strict=True):
        if isinstance(outcome, BaseException) and not record.cut:
            raise outcome  # as before: a baseline that fails is a harness bug, not a figure
    return [outcome is True for outcome in outcomes]


async def child(spec: Spec) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # one extra channel for the warm-up reply, so it never shares a per-channel budget
        channels = spec.channels()
        warm_channel = "C999999" if spec.platform == "slack" else "999999999999999999"
        proc, base = start_fake(spec.platform, spec.scale, [*channels, warm_channel], tmp)
        try:
            async with Surfaces(spec, base) as surfaces:
                original = surfaces.thread

                def thread(i: int) -> Any:
                    t = original(i)
                    return dataclasses.replace(t, channel=warm_channel) if i == spec.load + 1 else t

                surfaces.thread = thread  # type: ignore[method-assign]
                records = [Record() for _ in range(spec.load)]
                started = asyncio.Event()
                go = asyncio.Event()
                runner = _run_ours if spec.editor == "ours" else _run_baseline
                task = asyncio.create_task(runner(spec, surfaces, records, tmp, started, go))
                waiting = asyncio.create_task(started.wait())
                await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    task.result()  # the warm-up failed: raise it
                # let the warm-up's budgets (ours and the fake's) refill fully before the measured load
                await asyncio.sleep(6.5 / spec.scale)
                lag: list[float] = []
                rss: list[int] = []
                stop = asyncio.Event()
                rss0 = rss_bytes()
                ticker = asyncio.create_task(sampler(lag, rss, stop))
                if spec.trace_memory:
                    import tracemalloc

                    tracemalloc.start(8)
                    heap0 = tracemalloc.get_traced_memory()[0]
                profiler = None
                if spec.profile:
                    from pyinstrument import Profiler  # the `bench` extra

                    profiler = Profiler(interval=0.001, async_mode="disabled")
                    profiler.start()
                cpu0, wall0 = time.process_time(), time.monotonic()
                go.set()
                if spec.trace_memory:
                    await asyncio.sleep(spec.trace_memory)
                    snapshot = tracemalloc.take_snapshot()
                    heap_now = tracemalloc.get_traced_memory()[0]
                    in_flight = sum(1 for r in records if r.last_returned is None or r.done is None)
                oks = await task
                cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
                if profiler is not None:
                    profiler.stop()
                    Path(spec.profile).write_text(profiler.output_text(unicode=True, show_all=False))
                stop.set()
                await ticker
            state = await fake_state(base)
        finally:
            stop_process(proc)
    result = summarize(spec, records, oks, state, cpu, wall, lag, max([rss0, *rss]) - rss0)
    if spec.trace_memory:
        result["traced_in_flight"] = in_flight
        result["traced_kb_per_in_flight"] = (heap_now - heap0) / 1024 / max(in_flight, 1)
        stats = snapshot.statistics("filename")[:15]
        result["traced_top"] = [f"{st.size / 1024:.0f} KB {st.traceback[0].filename}" for st in stats]
    return result


def summarize(
    spec: Spec, records: list[Record], oks: list[bool], state: dict[str, Any], cpu: float, wall: float, lag: list[float], rss_delta: int
) -> dict[str, Any]:
    from bridge.split import unsplit

    shown = state["messages"]
    first, first_wait, final, exact = [], [], [], 0
    misses = {"not_done": 0, "platform_differs": 0, "text_differs": 0}
    cut = sum(r.cut for r in records)
    if cut:
        misses["cut_off"] = cut
    for ok, r in zip(oks, records, strict=True):
        if r.first_visible is not None and r.first_delta is not None:
            first.append(r.first_visible - r.first_delta)
            first_wait.append(max(0.0, r.first_call_started - r.first_delta))  # type: ignore[operator]
        if r.last_returned is not None and r.done is not None and not r.cut:
            final.append(max(0.0, r.last_returned - r.done))
        on_platform = all(shown.get(key) == text for key, text in r.sent_payload.items())
        joined = unsplit(list(r.sent_text.values()))
        exact += bool(ok and on_platform and r.full_text and joined == r.full_text)
        misses["not_done"] += not ok
        if r.raised:
            misses["raised"] = misses.get("raised", 0) + 1
            misses.setdefault("raised_example", r.raised)
        misses["platform_differs"] += not on_platform
        if not (r.full_text and joined == r.full_text):
            misses["text_differs"] += 1
            misses.setdefault("example", f"{len(r.full_text)} chars streamed, {len(joined)} shown in {len(r.sent_text)} message(s), {r.deltas} deltas: {joined[-60:]!r} vs {r.full_text[-60:]!r}")
    deltas = sum(r.deltas for r in records)
    n = spec.load
    return {
        "platform": spec.platform,
        "layout": spec.layout,
        "replies": n,
        "editor": spec.editor,
        "scale": spec.scale,
        "first_p50_ms": 1e3 * pct(first, 0.5),
        "first_p99_ms": 1e3 * pct(first, 0.99),
        "first_wait_p99_ms": 1e3 * pct(first_wait, 0.99),
        "final_p50_ms": 1e3 * pct(final, 0.5),
        "final_p99_ms": 1e3 * pct(final, 0.99),
        "final_max_ms": 1e3 * max(final, default=float("nan")),
        "calls_per_reply": sum(r.calls for r in records) / n,
        "accepted_per_reply": sum(r.calls - r.refused for r in records) / n,
        "rate_limited": state["rate_limited"],
        "loop_lag_p99_ms": 1e3 * pct(lag, 0.99),
        "cpu_us_per_delta": 1e6 * cpu / max(deltas, 1),
        "deltas_per_reply": deltas / n,
        "kb_per_reply": rss_delta / 1024 / n,
        "exact_pct": 100.0 * exact / n,
        "misses": misses,
        "wall_s": f"{wall:.1f} (cut at {spec.max_run:g} s: {n - cut}/{n} finished)" if cut else wall,
        "finished": n - cut,
    }


# -- the orchestrator -------------------------------------------------------------------------------


def auto_scale(load: int, platform: str, layout: str) -> float:
    """Real time where every reply has its own budget (Discord, a channel per reply); else the
    window shortened max(1, load/10)-fold, so a shared budget serves ~10 replies' worth."""
    if platform == "discord" and layout == "spread":
        return 1.0
    return float(max(1, load // 10))


def run_child(spec: Spec, timeout: float) -> dict[str, Any]:
    payload = json.dumps(spec.__dict__)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.platform_bench", "--child", payload],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        nan = float("nan")
        row: dict[str, Any] = {key: nan for key, _, _ in COLUMNS}
        row.update(platform=spec.platform, layout=spec.layout, replies=spec.load, editor=spec.editor, scale=spec.scale)
        row.update(rate_limited=-1, wall_s=f"> {timeout:.0f} (stopped)", misses={"timeout": timeout})
        return row
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"run {spec} failed:\n{done.stderr[-3000:]}")


COLUMNS = [
    ("platform", "platform", "{}"),
    ("layout", "layout", "{}"),
    ("replies", "replies", "{:d}"),
    ("scale", "window ÷", "{:.0f}"),
    ("editor", "editor", "{}"),
    ("first_p50_ms", "first text p50 (ms)", "{:.0f}"),
    ("first_p99_ms", "first text p99 (ms)", "{:.0f}"),
    ("first_wait_p99_ms", "wait before first-text call p99 (ms)", "{:.0f}"),
    ("final_p50_ms", "final p50 (ms)", "{:.0f}"),
    ("final_p99_ms", "final p99 (ms)", "{:.0f}"),
    ("final_max_ms", "final max (ms)", "{:.0f}"),
    ("calls_per_reply", "calls / reply", "{:.2f}"),
    ("accepted_per_reply", "accepted calls / reply", "{:.2f}"),
    ("rate_limited", "429s", "{:d}"),
    ("loop_lag_p99_ms", "loop lag p99 (ms)", "{:.1f}"),
    ("cpu_us_per_delta", "CPU / delta (µs)", "{:.0f}"),
    ("kb_per_reply", "RSS / in-flight reply (KB)", "{:.1f}"),
    ("exact_pct", "final text exact (%)", "{:.0f}"),
    ("wall_s", "wall (s)", "{:.1f}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" if fmt == "{}" else "---:" for _, _, fmt in COLUMNS) + "|"
    body = ["| " + " | ".join(_fmt(fmt, row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _fmt(fmt: str, value: Any) -> str:
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float):
        return "–"
    if not theirs or ours != ours or theirs != theirs:
        return "–"
    return f"{ours / theirs:.2f}"


def ratios(rows: list[dict[str, Any]]) -> str:
    """Ours ÷ each baseline, per scenario (below 1 is better for every column)."""
    keys = [("first_p99_ms", "first p99"), ("final_p99_ms", "final p99"), ("calls_per_reply", "calls / reply"), ("rate_limited", "429s"), ("cpu_us_per_delta", "CPU / delta")]
    head = "| platform | layout | replies | baseline | " + " | ".join(f"ours ÷ base: {t}" for _, t in keys) + " |"
    rule = "|---|---|---:|---|" + "|".join("---:" for _ in keys) + "|"
    lines = [head, rule]
    scenarios = {(r["platform"], r["layout"], r["replies"]) for r in rows}
    for sc in sorted(scenarios, key=lambda s: (s[0], s[1], s[2])):
        by = {r["editor"]: r for r in rows if (r["platform"], r["layout"], r["replies"]) == sc}
        if "ours" not in by and "ours*" in by:
            by["ours"] = by["ours*"]
        if "ours" not in by:
            continue
        for base in ("timer", "chunk20"):
            if base in by:
                cells = []
                for key, _ in keys:
                    o, b = by["ours"][key], by[base][key]
                    cells.append(f"{o}/{b}" if key == "rate_limited" else ratio(o, b))
                lines.append(f"| {sc[0]} | {sc[1]} | {sc[2]} | {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


MARK_BEGIN = "<!-- platform-bench:begin -->"
MARK_END = "<!-- platform-bench:end -->"


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> None:
    path = ROOT / "docs" / "PERFORMANCE.md"
    text = path.read_text()
    block = "\n".join(
        [
            MARK_BEGIN,
            f"Latest run: {dt.date.today().isoformat()}, {platform_mod.python_implementation()} "
            f"{platform_mod.python_version()}, {os.cpu_count()} cores; mock agent: first token after "
            f"{args.first_token_delay * 1000:.0f} ms, a delta every {args.delta_delay * 1000:.0f} ms. Command: `{command}`",
            "",
            table(rows),
            "",
            "Ours ÷ baseline (below 1 means ours is lower, i.e. better; 429s as ours/baseline):",
            "",
            ratios(rows),
            MARK_END,
        ]
    )
    if MARK_BEGIN in text:
        start, end = text.index(MARK_BEGIN), text.index(MARK_END) + len(MARK_END)
        text = text[:start] + block + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", default="1,100,1000", help="comma-separated concurrent reply counts")
    parser.add_argument("--platforms", default="slack,discord")
    parser.add_argument("--layouts", default="spread,one", help="spread: a channel per reply; one: all in one channel")
    parser.add_argument("--editors", default=",".join(EDITORS))
    parser.add_argument("--scale", default="auto", help="window speed-up: a number, or auto (1 for Discord spread, else max(1, load/10))")
    parser.add_argument("--first-token-delay", type=float, default=0.15)
    parser.add_argument("--delta-delay", type=float, default=0.03)
    parser.add_argument("--deltas", choices=["words", "mock"], default="words", help="words: each mock delta re-emitted as word-sized deltas (token streaming)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per run")
    parser.add_argument(
        "--max-run",
        type=float,
        default=0.0,
        help="stop each run's load after this many seconds: unfinished replies are cancelled, counted as not "
        "exact and the row says how many finished. First-text times cover the replies that showed text before "
        "the cut (so p99 is optimistic when replies were cut); final times cover finished replies only",
    )
    parser.add_argument("--json", help="also append every row, as JSON lines, to this file")
    parser.add_argument("--write", action="store_true", help="update docs/PERFORMANCE.md")
    parser.add_argument(
        "--trace-memory",
        type=float,
        default=0.0,
        help="tracemalloc the load and snapshot this many seconds in (memory diagnosis; slows every other figure)",
    )
    parser.add_argument("--profile", default="", help="pyinstrument each run; reports go to PROFILE-<run>.txt (slows every figure)")
    parser.add_argument("--report", help="print (and with --write, publish) the rows of an earlier --json file instead of running")
    parser.add_argument("--command", help="with --report: the command(s) that produced the rows, for the docs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report:
        rows = [json.loads(line) for line in Path(args.report).read_text().splitlines() if line.strip()]
        print(table(rows))
        print()
        print(ratios(rows))
        if args.write:
            write_results(rows, args, args.command or f".venv/bin/python -m bench.platform_bench --report {args.report}")
            print("docs/PERFORMANCE.md updated")
        return
    if args.child:
        result = asyncio.run(child(Spec(**json.loads(args.child))))
        print(json.dumps(result), flush=True)
        return
    rows = run_matrix(
        [int(x) for x in args.loads.split(",")],
        args.platforms.split(","),
        args.layouts.split(","),
        args.editors.split(","),
        args.scale,
        args.first_token_delay,
        args.delta_delay,
        args.timeout,
        args.json,
        trace_memory=args.trace_memory,
        deltas=args.deltas,
        profile=args.profile,
        max_run=args.max_run,
    )
    print()
    print(ratios(rows))
    if args.write:
        write_results(rows, args, ".venv/bin/python -m bench.platform_bench " + " ".join(sys.argv[1:]).replace(" --write", ""))
        print("docs/PERFORMANCE.md updated")


def run_matrix(
    loads: list[int],
    platforms: list[str],
    layouts: list[str],
    editors: list[str],
    scale: str = "auto",
    first_token_delay: float = 0.15,
    delta_delay: float = 0.03,
    timeout: float = 900.0,
    json_path: str | None = None,
    echo: bool = True,
    trace_memory: float = 0.0,
    deltas: str = "words",
    profile: str = "",
    max_run: float = 0.0,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    proc, url = start_agent(first_token_delay, delta_delay)
    try:
        if echo:
            print(table([]), flush=True)
        for load in loads:
            for plat in platforms:
                for layout in layouts:
                    if load == 1 and layout == "one" and "spread" in layouts:
                        continue  # one reply: both layouts are the same run
                    for editor in editors:
                        s = auto_scale(load, plat, layout) if scale == "auto" else float(scale)
                        spec = Spec(plat, layout, load, editor, s, url, deltas=deltas, trace_memory=trace_memory, max_run=max_run,
                                    profile=f"{profile}-{plat}-{layout}-{load}-{editor}.txt" if profile else "")
                        row = run_child(spec, timeout)
                        rows.append(row)
                        if json_path:
                            with open(json_path, "a") as f:
                                f.write(json.dumps(row) + "\n")
                        if echo:
                            print(table([row]).splitlines()[-1], flush=True)
                            if row["exact_pct"] < 100:
                                print(f"  not exact: {row['misses']}", flush=True)
                            if "traced_top" in row:
                                print(f"  traced: {row['traced_kb_per_in_flight']:.1f} KB per in-flight reply "
                                      f"({row['traced_in_flight']} in flight)", *row["traced_top"], sep="\n    ", flush=True)
    finally:
        stop_process(proc)
    return rows


if __name__ == "__main__":
    main()
