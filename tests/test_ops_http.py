"""The ops HTTP server over real sockets: /healthz, /readyz (database, platforms, drain) and
/metrics (Prometheus text, parsed back) after real replies through the relay; Slack's HTTP mode
on the same port; and the `agent-bridge run` process answering the probes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from collections.abc import Sequence
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from adapters.discord.platform import DiscordPlatform
from adapters.discord.settings import load_discord_settings
from adapters.slack import load_platform
from bridge.app import Bridge
from bridge.config import load_settings
from bridge.keys import ThreadKey
from bridge.metrics import Metrics
from bridge.ops_http import OpsServer, serving
from bridge.platforms import run_platforms
from bridge.relay import Inbound
from bridge.store import Store
from bridge.store.store import make_engine
from bridge.surface import RateLimited
from tests.conftest import SENTIENTONE_AGENT
from tests.discord_fake import BOT_TOKEN as DISCORD_TOKEN
from tests.discord_fake import running_fake_discord
from tests.recording import RecordingSurface, StreamingSurface
from tests.secret_guard import LIFECYCLE_KEY
from tests.slack_client import SlackDelivery
from tests.slack_fake import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, running_fake_slack
from tests.test_process_lifecycle import BridgeProcess, free_port

ALLOWED_LABELS = {"status", "platform", "method", "code", "le"}


def thread(name: str = "t1") -> ThreadKey:
    return ThreadKey("recording", "W1", "C1", name)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics body, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def get(url: str) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
        return response.status_code, response.text


class ProbePlatform:
    """A platform for `run_platforms` whose connection the test switches on and off; it also
    learns the shared server's address the way Slack's HTTP mode does (`http_listening`)."""

    name = "probe"

    def __init__(self) -> None:
        self.up = False
        self.base_url: str | None = None
        self.listening = asyncio.Event()

    def secrets(self) -> list[str]:
        return []

    def http_routes(self) -> Sequence[web.RouteDef]:
        return [web.get("/probe", self._hello)]

    def http_listening(self, base_url: str | None) -> None:
        self.base_url = base_url
        if base_url:
            self.listening.set()

    async def readiness(self) -> str | None:
        return None if self.up else "not connected"

    async def run(self, bridge: Bridge, stop: asyncio.Event) -> None:
        await stop.wait()

    async def _hello(self, request: web.Request) -> web.Response:
        return web.Response(text="probe route")


# -- health and readiness ----------------------------------------------------------------------


async def test_healthz_readyz_and_metrics_answer_on_an_ephemeral_port(bridge):
    async with serving(bridge, host="127.0.0.1", port=0) as server:
        assert server.url and not server.url.endswith(":0")
        status, body = await get(f"{server.url}/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, body = await get(f"{server.url}/readyz")
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{server.url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        assert value(found, "agent_bridge_replies_total", status="done") == 0  # present from the start
        assert ("agent_bridge_agent_errors_total", (("code", "idle_timeout"),)) in found
        assert value(found, "agent_bridge_replies_in_flight") == 0
        url = server.url
    with pytest.raises(httpx.ConnectError):  # stopped means closed
        await get(f"{url}/healthz")


def dead_database_url(port: int) -> str:
    return f"postgresql+asyncpg://bridge:pw-never-shown@127.0.0.1:{port}/bridge"


@pytest.mark.parametrize("how", ["refused", "silent"])
async def test_readyz_is_503_when_the_database_does_not_answer(bridge, how, caplog):
    """A Postgres URL to a closed port (refused at once), or to a listener that never speaks
    (the ping's timeout): not ready, naming the check but neither the URL nor the password;
    /healthz stays 200 (no database call)."""
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1] if how == "silent" else free_port()
    url = dead_database_url(port)
    dead = Store(make_engine(url, connect_timeout=30), make_url(url))
    try:
        broken = dataclasses.replace(bridge, store=dead)
        server = OpsServer(broken, host="127.0.0.1", port=0, ping_timeout=0.5)
        await server.start()
        try:
            started = asyncio.get_running_loop().time()
            status, body = await get(f"{server.url}/readyz")
            assert asyncio.get_running_loop().time() - started < 5
            assert status == 503
            assert json.loads(body) == {"status": "not ready", "failed": {"database": "not answering"}}
            assert "pw-never-shown" not in body and str(port) not in body
            assert (await get(f"{server.url}/healthz"))[0] == 200
        finally:
            await server.stop()
    finally:
        await dead.close()
        silent.close()
    assert "pw-never-shown" not in caplog.text
    assert "not ready" in caplog.text  # the admin learns why, once, from the log


async def test_readyz_follows_the_platforms_and_the_shutdown_drain(bridge_factory):
    async with bridge_factory(bridge_shutdown_grace=10) as bridge:
        probe = ProbePlatform()
        shutdown = asyncio.Event()
        running = asyncio.create_task(run_platforms(bridge, [probe], shutdown))
        await asyncio.wait_for(probe.listening.wait(), 10)
        base = probe.base_url
        assert base is not None
        assert await get(f"{base}/probe") == (200, "probe route")  # a platform's route, same port
        status, body = await get(f"{base}/readyz")
        assert status == 503 and json.loads(body)["failed"] == {"probe": "not connected"}
        probe.up = True
        assert (await get(f"{base}/readyz"))[0] == 200

        surface = RecordingSurface()
        reply = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "be slow please", None), surface))
        await surface.wait_for(surface.shows_text)
        shutdown.set()
        for _ in range(100):  # the drain waits for the slow reply; meanwhile: not ready
            status, body = await get(f"{base}/readyz")
            if status == 503:
                break
            await asyncio.sleep(0.02)
        assert status == 503 and "shutdown" in json.loads(body)["failed"]
        assert not reply.done()
        assert (await get(f"{base}/healthz"))[0] == 200  # alive while draining
        await asyncio.wait_for(running, 20)
        assert (await reply).ok
        assert probe.base_url is None
        with pytest.raises(httpx.ConnectError):
            await get(f"{base}/healthz")


# -- metrics -----------------------------------------------------------------------------------


async def test_metrics_count_real_replies_with_bounded_labels(bridge):
    surface = RecordingSurface()
    surface.fail_next_edits = [RateLimited(0.01, "chat.update")]
    done = await bridge.relay.handle(Inbound(thread("a"), "U1", "hello there", "ev-a"), surface)
    failed = await bridge.relay.handle(Inbound(thread("b"), "U1", "please error out", "ev-b"), surface)
    assert done.ok and failed.reply is not None and failed.reply.error is not None
    code = failed.reply.error.code.value

    posts_before = len(surface.ops("post"))
    slow = asyncio.create_task(bridge.relay.handle(Inbound(thread("c"), "U2", "be slow", None), surface))
    await surface.wait_for(lambda: len(surface.ops("post")) > posts_before)  # its placeholder is up
    async with serving(bridge, host="127.0.0.1", port=0) as server:
        during = samples((await get(f"{server.url}/metrics"))[1])
        assert value(during, "agent_bridge_replies_in_flight") == 1
        await slow
        status, text = await get(f"{server.url}/metrics")
    assert status == 200
    found = samples(text)
    assert value(found, "agent_bridge_replies_in_flight") == 0
    assert value(found, "agent_bridge_replies_total", status="done") == 2
    assert value(found, "agent_bridge_replies_total", status="failed") == 1
    assert value(found, "agent_bridge_agent_errors_total", code=code) == 1
    assert sum(v for (n, _), v in found.items() if n == "agent_bridge_agent_errors_total") == 1
    assert value(found, "agent_bridge_reply_duration_seconds_count") == 3
    assert value(found, "agent_bridge_reply_duration_seconds_sum") > 0
    assert value(found, "agent_bridge_first_text_latency_seconds_count") >= 2
    posts = value(found, "agent_bridge_platform_calls_total", platform="recording", method="post")
    edits = value(found, "agent_bridge_platform_calls_total", platform="recording", method="edit")
    assert posts == len(surface.ops("post")) >= 3
    assert edits == len(surface.ops("edit")) + 1  # the refused edit was a call too
    assert value(found, "agent_bridge_platform_rate_limited_total", platform="recording", method="edit") == 1
    labels = {name for (_, pairs) in found for name, _ in pairs}
    assert labels <= ALLOWED_LABELS  # never a channel, user or message id


async def test_native_stream_calls_are_counted_by_core_operation(bridge):
    surface = StreamingSurface()
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "hello there", None), surface)
    assert outcome.ok
    found = samples(bridge.metrics.render().decode())
    for method, op in (("stream_start", "start_stream"), ("stream_append", "append_stream"), ("stream_stop", "stop_stream")):
        assert value(found, "agent_bridge_platform_calls_total", platform="recording", method=method) == len(surface.ops(op)) >= 1


async def test_metrics_live_in_each_bridges_own_registry(bridge_factory, tmp_path):
    surface = RecordingSurface()
    async with bridge_factory() as first:
        await first.relay.handle(Inbound(thread(), "U1", "hello there", None), surface)
        assert first.relay.metrics is first.metrics
        other = Metrics()
        assert value(samples(other.render().decode()), "agent_bridge_replies_total", status="done") == 0
        assert value(samples(first.metrics.render().decode()), "agent_bridge_replies_total", status="done") == 1
    assert REGISTRY.get_sample_value("agent_bridge_replies_total", {"status": "done"}) is None  # not the global one


# -- platforms on the shared port --------------------------------------------------------------


async def test_slack_http_mode_serves_events_on_the_ops_port(bridge):
    async with running_fake_slack(time_scale=4) as fake:
        platform = load_platform(
            slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET, slack_app_token="",
            slack_api_url=fake.api_url, slack_rate_scale=4,
        )
        assert platform is not None
        probe = ProbePlatform()  # learns the core server's address: Slack must be on that one
        probe.up = True
        shutdown = asyncio.Event()
        running = asyncio.create_task(run_platforms(bridge, [platform, probe], shutdown))
        try:
            await asyncio.wait_for(platform.ready.wait(), 10)
            assert platform.url is not None and platform.url.endswith("/slack/events")
            base = platform.url.removesuffix("/slack/events")
            assert base == probe.base_url  # one server, one port
            assert (await get(f"{base}/healthz"))[0] == 200
            assert (await get(f"{base}/readyz"))[0] == 200
            async with aiohttp.ClientSession() as session:
                slack = SlackDelivery(fake, platform, session)
                _, thread_ts = await slack.mention("hello there")
                await fake.wait_for(lambda: (m := fake.thread_messages("C0001", thread_ts)) and "You said" in m[0].text)
                assert (await slack.post(b"\xff\xfe", "application/json")).status == 400  # still refused before bolt
            await fake.wait_for(lambda: bridge.relay.in_flight == 0)
            found = samples((await get(f"{base}/metrics"))[1])
            assert value(found, "agent_bridge_platform_calls_total", platform="slack", method="post") >= 1
            assert value(found, "agent_bridge_replies_total", status="done") == 1
        finally:
            shutdown.set()
            await asyncio.wait_for(running, 15)
        with pytest.raises(httpx.ConnectError):
            await get(f"{base}/healthz")


async def test_slack_socket_mode_and_discord_together_report_readiness(bridge_factory):
    port = free_port()
    async with (
        bridge_factory(bridge_http_port=port) as bridge,
        running_fake_slack() as fake_slack,
        running_fake_discord() as fake_discord,
    ):
        slack = load_platform(
            slack_bot_token=BOT_TOKEN, slack_app_token=APP_TOKEN, slack_signing_secret="", slack_api_url=fake_slack.api_url
        )
        discord = DiscordPlatform(
            load_discord_settings(discord_bot_token=DISCORD_TOKEN, discord_api_url=fake_discord.api_url),
            guild_ready_timeout=0.05,
        )
        fake_discord.platform = discord  # type: ignore[attr-defined]
        assert await discord.readiness() == "gateway not ready"
        shutdown = asyncio.Event()
        running = asyncio.create_task(run_platforms(bridge, [slack, discord], shutdown))
        base = f"http://127.0.0.1:{port}"
        try:
            status = 0
            for _ in range(200):
                if running.done():
                    running.result()
                try:
                    status, body = await get(f"{base}/readyz")
                except httpx.ConnectError:
                    status, body = 0, ""
                if status == 200:
                    break
                if status == 503:
                    assert set(json.loads(body)["failed"]) <= {"slack", "discord"}
                await asyncio.sleep(0.05)
            assert status == 200, body
            assert await slack.readiness() is None and await discord.readiness() is None
            assert (await get(f"{base}/slack/events"))[0] in (404, 405)  # Socket Mode serves no events route
            assert (await get(f"{base}/metrics"))[0] == 200
        finally:
            shutdown.set()
            await asyncio.wait_for(running, 20)
        assert await slack.readiness() is not None and await discord.readiness() is not None


# -- the real process --------------------------------------------------------------------------


async def test_agent_bridge_run_answers_healthz_and_readyz(tmp_path, mock_agent_url):
    port = free_port()
    async with running_fake_slack() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "BRIDGE_", "SLACK_", "DISCORD_"))}
        env.update(
            AGENT_API_URL=mock_agent_url,
            AGENT_API_KEY=LIFECYCLE_KEY,
            AGENT_DEFAULT_ID=SENTIENTONE_AGENT,
            BRIDGE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}",
            BRIDGE_HTTP_HOST="127.0.0.1",
            BRIDGE_HTTP_PORT=str(port),
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.api_url,
        )
        process = BridgeProcess(env, port, tmp_path / "run.log")
        await process.start()
        try:
            assert (await get(f"http://127.0.0.1:{port}/healthz"))[0] == 200
            for _ in range(100):
                status, body = await get(f"http://127.0.0.1:{port}/readyz")
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert (status, json.loads(body)) == (200, {"status": "ready"})
            status, text = await get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200 and "agent_bridge_replies_in_flight" in text
            for secret in (LIFECYCLE_KEY, BOT_TOKEN, SIGNING_SECRET):
                assert secret not in body and secret not in text
        finally:
            assert await process.signal(signal.SIGTERM) == 0
    log = (tmp_path / "run.log").read_text()
    assert "Traceback" not in log and LIFECYCLE_KEY not in log


def test_http_settings_are_core_settings(monkeypatch):
    monkeypatch.setenv("BRIDGE_HTTP_HOST", "127.0.0.2")
    monkeypatch.setenv("BRIDGE_HTTP_PORT", "3999")
    settings = load_settings()
    assert (settings.bridge_http_host, settings.bridge_http_port) == ("127.0.0.2", 3999)
    monkeypatch.delenv("BRIDGE_HTTP_HOST")
    monkeypatch.delenv("BRIDGE_HTTP_PORT")
    defaults: Any = load_settings()
    assert (defaults.bridge_http_host, defaults.bridge_http_port) == ("0.0.0.0", 3000)


async def test_discord_is_not_ready_while_its_gateway_is_down(bridge):
    async with running_fake_discord() as fake:
        platform = DiscordPlatform(
            load_discord_settings(discord_bot_token=DISCORD_TOKEN, discord_api_url=fake.api_url),
            guild_ready_timeout=0.05,
        )
        fake.platform = platform  # type: ignore[attr-defined]
        stop = asyncio.Event()
        task = asyncio.create_task(platform.run(bridge, stop))
        try:
            await asyncio.wait_for(platform.connected.wait(), 10)
            assert await platform.readiness() is None
            (session,) = fake.sessions
            await session.ws.close(code=4000, message=b"gone")  # the fake never resumes a session
            async with asyncio.timeout(10):
                while await platform.readiness() is None:
                    await asyncio.sleep(0.02)
            assert await platform.readiness() == "gateway disconnected (reconnecting)"
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
