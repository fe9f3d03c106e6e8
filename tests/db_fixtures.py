"""Database fixtures: every store test runs on a SQLite file and on a real Postgres.

Postgres gets one throw-away database per test session (`agent_bridge_test_<random>`,
dropped at the end) and an emptied `public` schema per test. If Postgres is unreachable the
Postgres-parameterised tests FAIL; set BRIDGE_SKIP_POSTGRES=1 to skip them instead.
Override the server with BRIDGE_TEST_POSTGRES_URL (an asyncpg URL to an existing database).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from bridge.store import Store

T = TypeVar("T")

PG_ADMIN_URL = os.environ.get(
    "BRIDGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgres")


def skip_postgres() -> bool:
    return os.environ.get("BRIDGE_SKIP_POSTGRES") == "1"


def run_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on its own loop in another thread: sync fixtures run beside
    pytest-asyncio's loop, and `asyncio.run` here would unset it."""

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _dsn(url: URL) -> str:
    """asyncpg's own DSN (no `+asyncpg`)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_execute(url: URL, *sql: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=5)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh Postgres database for this test session, as an asyncpg SQLAlchemy URL."""
    if skip_postgres():
        pytest.skip("BRIDGE_SKIP_POSTGRES=1")
    admin = make_url(PG_ADMIN_URL)
    name = f"agent_bridge_test_{secrets.token_hex(4)}"
    try:
        run_in_thread(lambda: _pg_execute(admin, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"Postgres not reachable at {admin.render_as_string(hide_password=True)}: {exc!r} "
            "(start it, point BRIDGE_TEST_POSTGRES_URL at one, or set BRIDGE_SKIP_POSTGRES=1)"
        )
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        run_in_thread(
            lambda: _pg_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )


def empty_postgres(url: str) -> None:
    """Drop every table (and alembic's version table) so the next test migrates from zero."""
    run_in_thread(
        lambda: _pg_execute(
            make_url(url), "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"
        )
    )


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an EMPTY database (no tables): a SQLite file in tmp_path, or the session's
    Postgres database with a fresh schema."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'bridge.db'}"
    url: str = request.getfixturevalue("pg_database_url")
    empty_postgres(url)
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A migrated `Store` on `db_url`, closed after the test."""
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()
