"""A full disk: nothing is acknowledged that was not stored, and receiving recovers.

SQLite's `max_page_count` makes the database file unable to grow, which SQLite reports
exactly as a full disk ("database or disk is full"); lifting it is the disk freeing up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event, func, select
from starlette.testclient import TestClient

from radbridge.engine.db import Database
from radbridge.engine.migrate import upgrade
from radbridge.engine.models import Message
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.errors import StoreUnavailable
from radbridge.interfaces.api import ApiContext, create_app
from tests.engine_harness import channel, harness


class DiskLimit:
    """Caps the SQLite file at its current size plus `spare` pages while `full` is set."""

    def __init__(self, database: Database, spare: int = 4) -> None:
        self.full = True
        self._database = database
        self._spare = spare
        event.listen(database.engine, "connect", self._on_connect)
        database.engine.dispose()  # every connection from now on gets the cap

    def _on_connect(self, dbapi_connection, _record) -> None:
        if self.full:
            pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages + self._spare}")

    def free_up(self) -> None:
        self.full = False
        self._database.engine.dispose()


def sqlite_database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(database)
    return database


def stored_messages(database: Database) -> int:
    with database.read() as session:
        return session.scalar(select(func.count()).select_from(Message)) or 0


def test_a_full_disk_refuses_then_recovers_without_losing_receipts(tmp_path):
    database = sqlite_database(tmp_path)
    with harness(database, tmp_path, [channel()], inline_limit=64 * 1024) as h:
        limit = DiskLimit(database)
        receipts, refused = [], 0
        for i in range(200):
            try:
                receipts.append(h.receive(bytes([i % 256]) * 8000))
            except StoreUnavailable as exc:
                assert "full" in str(exc)
                refused += 1
                if refused >= 3:
                    break
        assert refused == 3, "the cap never filled the disk"
        assert stored_messages(database) == len(receipts)  # every receipt is stored
        limit.free_up()
        after = h.receive(b"disk has room again")
        assert not after.duplicate
    assert stored_messages(database) == len(receipts) + 1
    database.dispose()


def test_the_http_source_answers_503_while_the_disk_is_full(tmp_path):
    database = sqlite_database(tmp_path)
    url = database.url
    database.dispose()
    inbox = channel("inbox", source={"type": "http"})
    settings = Settings.resolve(data_dir=str(tmp_path / "data"), database_url=url,
                                node_id="n1", api_port=0, environ={})

    async def scenario() -> tuple[list[int], int]:
        node = Node(settings, [inbox], poll_interval=0.05)
        await node.start()
        limit = DiskLimit(node.database, spare=2)
        app = create_app(ApiContext(
            database=node.database, blobs=node.blobs, channels=node.channels,
            node_id="n1", inline_limit=settings.inline_limit, receive=node.receive,
            store_metrics=False))
        codes = []
        try:
            with TestClient(app) as client:
                for _ in range(60):
                    response = await asyncio.to_thread(
                        client.post, "/api/channels/inbox/messages", content=b"x" * 30000)
                    codes.append(response.status_code)
                    if response.status_code == 503:
                        assert response.headers["Retry-After"]
                        break
                limit.free_up()
                recovered = await asyncio.to_thread(
                    client.post, "/api/channels/inbox/messages", content=b"back")
        finally:
            await node.stop()
        return codes, recovered.status_code

    codes, recovered = asyncio.run(scenario())
    assert codes[-1] == 503 and all(code == 202 for code in codes[:-1])
    assert recovered == 202
    check = Database(url)
    assert stored_messages(check) == codes.count(202) + 1
    check.dispose()
