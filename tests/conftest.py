"""Shared fixtures: a real mock agent on a loopback port and a bridge on a real SQLite file."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from bridge.app import Bridge, open_bridge
from bridge.config import load_settings
from bridge.mock_agent import running_mock_agent
from tests.secret_guard import CONFTEST_KEY, leaks

# CI explores the same examples every run (reproducible, no flaky deadlines); locally each run
# draws new ones, which is where new counterexamples come from.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

SENTIENTONE_AGENT = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
OTHER_SENTIENTONE_AGENT = "0f0e0d0c-0b0a-4999-8888-777766665555"


def bridge_settings(agent_url: str, db_path, **overrides: Any):
    """Settings for a bridge against the mock agent at `agent_url` with a SQLite file at `db_path`."""
    options: dict[str, Any] = {
        "agent_api_url": agent_url,
        "agent_api_key": CONFTEST_KEY,
        "agent_default_id": SENTIENTONE_AGENT,
        "bridge_database_url": f"sqlite+aiosqlite:///{db_path}",
        "agent_idle_timeout": 5,
        "bridge_http_host": "127.0.0.1",  # the ops/Slack HTTP server: loopback, a free port
        "bridge_http_port": 0,
    }
    return load_settings(**{**options, **overrides})


async def upstream_text(bridge: Bridge, message: str) -> str:
    """What the agent streams for this message (default agent), read straight from the agent client."""
    from bridge.events import TextDelta

    agent_id = bridge.settings.agent_default_id
    return "".join([e.text async for e in bridge.agent.stream(agent_id, message) if isinstance(e, TextDelta)])


@pytest.fixture
def agent_ids() -> tuple[str, str]:
    return SENTIENTONE_AGENT, OTHER_SENTIENTONE_AGENT


@pytest.fixture
async def mock_agent_url() -> AsyncIterator[str]:
    async with running_mock_agent(host="127.0.0.1", port=0) as url:
        yield url


@pytest.fixture
def bridge_factory(mock_agent_url: str, tmp_path):
    """Open a bridge against the mock agent with a fresh SQLite file; settings can be overridden."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Bridge]:
        async with open_bridge(bridge_settings(mock_agent_url, tmp_path / "bridge.db", **overrides)) as bridge:
            yield bridge

    return factory


@pytest.fixture
async def bridge(bridge_factory) -> AsyncIterator[Bridge]:
    async with bridge_factory() as opened:
        yield opened


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "logs_secrets_on_purpose: the test feeds a secret to logging itself (redaction tests)"
    )


@pytest.fixture(autouse=True)
def no_secret_in_any_log_record(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture):
    """Every test: no known secret may appear in any log record the bridge produced (raw, before
    any redacting handler), nor in the text of a logged exception."""
    caplog.set_level(logging.INFO)
    yield
    if request.node.get_closest_marker("logs_secrets_on_purpose"):
        return
    texts = []
    for record in [*caplog.get_records("setup"), *caplog.get_records("call")]:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    found = leaks(texts)
    assert not found, f"secret(s) leaked into log records: {[s[:6] + '…' for s in found]}"
