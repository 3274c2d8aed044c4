"""What several subcommands share: opening the store and printing JSON or tables."""

from __future__ import annotations

import argparse
import json
from typing import Any

from radbridge.engine.db import Database
from radbridge.engine.migrate import upgrade
from radbridge.engine.settings import Settings


def add_store_options_to(parser: argparse.ArgumentParser) -> None:
    """--data-dir and --database-url, shared by every command that opens the store."""
    parser.add_argument(
        "--data-dir", help="folder for all state (default $RADBRIDGE_DATA_DIR or ./radbridge-data)"
    )
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
        "(default $RADBRIDGE_DATABASE_URL or SQLite under the data dir)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.resolve(
        data_dir=getattr(args, "data_dir", None),
        database_url=getattr(args, "database_url", None),
    )


def open_store(args: argparse.Namespace) -> tuple[Settings, Database]:
    """The store named by --data-dir/--database-url, migrated to the current schema."""
    settings = settings_from(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url, pool_size=2)
    upgrade(database)
    return settings, database


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))
