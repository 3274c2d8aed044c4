"""Schema migrations: bring any store up to the current models with Alembic.

On PostgreSQL an advisory lock makes concurrent upgrades by several starting nodes
take turns instead of racing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from radbridge.engine.db import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_ID = 0x5241_4442  # "RADB": the advisory lock that serialises upgrades


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Apply every migration not yet applied."""
    config = alembic_config()
    with database.engine.begin() as connection:
        if database.is_postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
