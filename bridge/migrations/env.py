"""Alembic environment for async engines.

`bridge.store.migrate` passes an open connection in `config.attributes["connection"]` (so
start-up migrations share the store's engine and lock); the plain `alembic` command gets
none and we build an async engine from the configured URL or BRIDGE_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from bridge.store.models import metadata
from bridge.store.store import make_engine

config = context.config

# Any constant works; it only has to be the same for every bridge process on one database.
PG_MIGRATION_LOCK = 0x61676272  # "agbr"


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes starting together must not both run CREATE TABLE.
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite can't ALTER most things; batch mode rebuilds tables for later migrations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = make_engine(url)
    try:
        # bridge_write: SQLite takes the write lock up front (BEGIN IMMEDIATE).
        async with engine.execution_options(bridge_write=True).begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _offline()
elif (passed := config.attributes.get("connection")) is not None:
    _run(passed)
else:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("BRIDGE_DATABASE_URL")
    if not url:
        raise SystemExit("set BRIDGE_DATABASE_URL (or sqlalchemy.url) to run migrations")
    asyncio.run(_run_from_url(url))
