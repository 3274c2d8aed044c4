"""Alembic migrations of the store; `radbridge.engine.migrate` runs them."""
