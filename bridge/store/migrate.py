"""Schema migrations, configured in code so they work from an installed package.

Used at start-up (`Store.open(url)`) and by `agent-bridge db upgrade`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An alembic `Config` pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url:
        # ConfigParser interpolates '%', which URL-escaped passwords contain.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade_sync(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _current_sync(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_connection(conn: AsyncConnection) -> None:
    """Upgrade to head inside the caller's transaction (SQLite: take it with BEGIN IMMEDIATE)."""
    await conn.run_sync(_upgrade_sync)


async def current_revision(conn: AsyncConnection) -> str | None:
    return await conn.run_sync(_current_sync)


async def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema; a no-op when it already is.

    Raises `StoreUnavailable` (password hidden) when the database cannot be reached.
    """
    from bridge.store.store import Store  # the store owns engine set-up and error wording

    store = await Store.open(url, migrate=True)
    await store.close()
