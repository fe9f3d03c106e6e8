"""The test fakes of Slack and Discord, served from their own process for the benchmark.

Running the fake platform outside the bridge's process keeps the bridge's CPU, memory and
event-loop figures its own. The fakes are the ones the test suite uses (`tests/slack_fake.py`,
`tests/discord_fake.py`): they enforce the documented limits with real 429s. `--scale`
shortens their window (Slack: `time_scale`; Discord: the 5-second window divided by it).

One extra route, `GET /bench/state`, tells the benchmark what the platform saw: calls, 429s,
and every message's current text, so "the final text on the platform" is the platform's own.

Run: `python -m bench.fake_platforms slack|discord --scale 10 --channels C1,C2`; it prints
`ready <port>` once it listens and serves until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from aiohttp import web

from tests.discord_fake import FakeDiscord
from tests.slack_fake import FakeSlack


def build(kind: str, scale: float, channels: list[str]) -> tuple[web.Application, Any]:
    if kind == "slack":
        fake: Any = FakeSlack(time_scale=scale, channels=tuple(channels))

        def state() -> dict[str, Any]:
            return {
                "calls": len(fake.calls),
                "rate_limited": fake.rate_limited,
                "messages": {f"{m.channel}/{m.ts}": m.text for m in fake.messages.values() if not m.deleted},
            }

    elif kind == "discord":
        fake = FakeDiscord(window=5.0 / scale)
        for channel in channels:
            fake.channels[channel] = fake._text_channel(channel, f"bench-{channel}")

        def state() -> dict[str, Any]:
            calls = [c for c in fake.calls if not c.route.startswith("/bench")]
            return {
                "calls": len(calls),
                "rate_limited": sum(1 for c in calls if c.status == 429),
                "messages": {f"{m['channel_id']}/{mid}": m["content"] for mid, m in fake.messages.items()},
            }

    else:
        raise SystemExit(f"unknown platform {kind!r}")

    app = fake.app()

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(state())

    app.router.add_get("/bench/state", handler)
    return app, fake


async def serve(kind: str, scale: float, channels: list[str]) -> None:
    app, fake = build(kind, scale, channels)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    if kind == "slack":
        fake.url = f"http://127.0.0.1:{port}"
    else:
        fake.base = f"http://127.0.0.1:{port}"
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("platform", choices=["slack", "discord"])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--channels", default="", help="comma-separated channel ids (or @file with one a line)")
    args = parser.parse_args()
    spec = args.channels
    if spec.startswith("@"):
        with open(spec[1:]) as f:
            channels = [line.strip() for line in f if line.strip()]
    else:
        channels = [c for c in spec.split(",") if c]
    try:
        asyncio.run(serve(args.platform, args.scale, channels))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
