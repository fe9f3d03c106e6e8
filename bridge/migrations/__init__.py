"""Alembic migrations for the bridge store (run them with `bridge.store.migrate.upgrade`)."""
