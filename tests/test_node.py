"""A node in-process: sources, hand-over between channels, reprocess, graceful stop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

import radbridge.interfaces.adapters  # noqa: F401  (registers file and directory adapters)
from radbridge.engine import audit, replay
from radbridge.engine.config import ChannelConfig
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import Delivery, Message
from radbridge.engine.receiver import Inbound
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings


def settings_for(tmp_path: Path, url: str) -> Settings:
    return Settings.resolve(data_dir=str(tmp_path / "data"), database_url=url,
                            node_id="test-node", api_port=0, environ={})


async def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


FOLDER_TO_ARCHIVE = [
    ChannelConfig.model_validate({
        "name": "drop", "source": {"type": "directory", "path": "in", "min_age": 0,
                                   "poll_interval": 0.1},
        "destinations": [{"name": "handover", "type": "channel", "channel": "archive"}],
    }),
    ChannelConfig.model_validate({
        "name": "archive", "source": {"type": "channel"},
        "transformers": ["text.normalize_newlines"],
        "destinations": [{"name": "files", "type": "file", "directory": "out"}],
    }),
]


async def test_files_flow_through_two_channels_to_the_archive(database_url, tmp_path):
    settings = settings_for(tmp_path, database_url)
    node = Node(settings, FOLDER_TO_ARCHIVE, poll_interval=0.1)
    await node.start()
    try:
        inbox = settings.data_dir / "in"
        for i in range(3):
            (inbox / f"msg{i}.hl7").write_bytes(f"MSH|{i}\nPID|{i}\n".encode())
        out = settings.data_dir / "out"
        await wait_for(lambda: out.exists() and len(list(out.glob("*.msg"))) == 3)
        contents = sorted(p.read_bytes() for p in out.glob("*.msg"))
        assert contents == [f"MSH|{i}\rPID|{i}\r".encode() for i in range(3)]
        assert sorted(p.name for p in (inbox / ".processed").iterdir()) == [
            "msg0.hl7", "msg1.hl7", "msg2.hl7"]
    finally:
        await node.stop()
    assert audit.verify(node.database).events > 0


async def test_reprocess_sends_again_under_a_new_idempotency_key(database_url, tmp_path):
    settings = settings_for(tmp_path, database_url)
    node = Node(settings, FOLDER_TO_ARCHIVE[1:], poll_interval=0.1)
    await node.start()
    try:
        receipt = await node.receive(Inbound(channel="archive", content_type="text/plain",
                                             source="test", content=b"MSH|1"))
        out = settings.data_dir / "out"
        await wait_for(lambda: out.exists() and len(list(out.glob("*.msg"))) == 1)
        replay.reprocess(node.database, [receipt.message_id], actor="test")
        node.wake()
        await wait_for(lambda: len(list(out.glob("*.msg"))) == 2)
        names = sorted(p.name for p in out.glob("*.msg"))
        assert names == [f"{receipt.uid}-0-files.msg", f"{receipt.uid}-1-files.msg"]
    finally:
        await node.stop()


async def test_graceful_stop_leaves_nothing_in_flight(database_url, tmp_path):
    settings = settings_for(tmp_path, database_url)
    node = Node(settings, FOLDER_TO_ARCHIVE[1:], poll_interval=0.1)
    await node.start()
    await asyncio.gather(*(node.receive(Inbound(
        channel="archive", content_type="text/plain", source="t", content=str(i).encode()))
        for i in range(50)))
    await node.stop()
    restarted = Node(settings, FOLDER_TO_ARCHIVE[1:], poll_interval=0.1)
    await restarted.start()
    try:
        def all_sent() -> bool:
            with restarted.database.read() as session:
                return session.scalar(select(func.count()).select_from(Delivery).where(
                    Delivery.status == DeliveryStatus.SENT)) == 50
        await wait_for(all_sent)
        with restarted.database.read() as session:
            assert session.scalar(select(func.count()).select_from(Message)) == 50
            assert session.scalar(select(func.count()).select_from(Delivery).where(
                Delivery.status == DeliveryStatus.IN_FLIGHT)) == 0
    finally:
        await restarted.stop()
    assert len(list((settings.data_dir / "out").glob("*.msg"))) == 50


def test_run_with_a_broken_config_starts_nothing(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nsource: {type: http, port: 1}\ndestinations: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "radbridge", "run", "-c", str(broken),
         "--data-dir", str(tmp_path / "data"), "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"{broken}:2: source.port: unknown key 'port'" in result.stderr
    assert "nothing started" in result.stderr
    assert not (tmp_path / "data").exists()
