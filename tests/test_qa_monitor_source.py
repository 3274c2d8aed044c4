"""The `qa-monitor` source: drift checked on a schedule inside the engine, each new alert
received on the source's own channel (so its destinations deliver it), once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import yaml

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.qa.monitor import MonitorSettings
from radbridge.engine.qa.source import DriftWatch
from radbridge.engine.receiver import Inbound, Receipt
from tests.test_qa_monitor import EXPECTED
from tests.test_qa_queries import add_rows, drift_rows

CHANNEL = """
name: qa-alerts
source: {type: qa-monitor, interval: 1h, period_days: 30, baseline_days: 60, min_group: 30}
destinations:
  - {name: archive, type: file, directory: outbox/qa-alerts}
"""


def watch(database: Database, tmp_path: Path, received: list[Inbound]) -> DriftWatch:
    async def receive(inbound: Inbound) -> Receipt:
        received.append(inbound)
        return Receipt(len(received), f"u{len(received)}", False)

    channel = ChannelConfig.model_validate(yaml.safe_load(CHANNEL))
    context = AdapterContext(tmp_path, BlobStore(tmp_path / "blobs"), 65536, receive,
                             database, "node-q")
    return DriftWatch(channel.name, channel.source, context)  # type: ignore[arg-type]


async def test_each_alert_reaches_the_channel_once_however_often_it_checks(
        database: Database, tmp_path: Path) -> None:
    settings = MonitorSettings(period_days=30, baseline_days=60, min_group=30)
    add_rows(database, drift_rows(*settings.windows(datetime.now(UTC).date())))
    received: list[Inbound] = []
    source = watch(database, tmp_path, received)
    assert await source.check() == len(EXPECTED)
    assert {json.loads(m.content or b"")["measure"] for m in received} == EXPECTED
    assert {m.channel for m in received} == {"qa-alerts"}
    assert len({m.dedup_key for m in received}) == len(EXPECTED)
    assert await source.check() == 0  # the same incidents: nothing new
    await source.start()  # the loop checks at once, then waits for the interval
    await asyncio.sleep(0.5)
    await asyncio.wait_for(source.stop(), 10)
    assert len(received) == len(EXPECTED)


async def test_a_check_that_fails_keeps_the_loop_alive(tmp_path: Path) -> None:
    broken = Database(f"sqlite:///{tmp_path / 'missing' / 'no.db'}")
    source = watch(broken, tmp_path, [])
    await source.start()
    await asyncio.sleep(0.3)
    await asyncio.wait_for(source.stop(), 10)  # logged, not raised; stops cleanly
