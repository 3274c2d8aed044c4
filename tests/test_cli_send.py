"""`radbridge send hl7`: files as editors save them, the ACKs printed, the exit status."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from radbridge.interfaces.cli.send_cmd import split_messages
from tests.hl7_support import adt_a01, mllp_channel, running_node, stored

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "hl7"


def send(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "radbridge", "send", "hl7", *args],
                          capture_output=True, text=True, timeout=60)


def test_split_messages_accepts_lf_crlf_and_several_messages_per_file() -> None:
    text = adt_a01("ONE").replace("\r", "\r\n") + "\n\n" + adt_a01("TWO").replace("\r", "\n")
    messages = split_messages("\ufeff" + text)
    assert [m.split("|")[9] for m in messages] == ["ONE", "TWO"]
    assert all("\n" not in m and m.endswith("\r") for m in messages)
    assert messages[0] == adt_a01("ONE")


async def test_sends_every_sample_and_prints_each_ack(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    files = sorted(SAMPLES.glob("*.hl7"))
    async with running_node(tmp_path, url, [mllp_channel()]) as (node, port):
        result = await asyncio.to_thread(send, *map(str, files), "--to", f"127.0.0.1:{port}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count(": AA") == len(files)
        assert result.stdout.count("MSA|AA|") == len(files)
        assert len(stored(node.database)) == len(files)


async def test_a_nak_makes_the_exit_status_1_and_is_explained(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hl7"
    bad.write_text(adt_a01("OLD", version="2.0"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    async with running_node(tmp_path, url, [mllp_channel()]) as (_, port):
        result = await asyncio.to_thread(send, str(bad), "--to", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"{bad}#1: AR" in result.stdout and "version '2.0' is not accepted" in result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert send(str(tmp_path / "missing.hl7"), "--to", "127.0.0.1:1").returncode == 2
    assert send(str(SAMPLES / "adt_a01_admit.hl7"), "--to", "no-port").returncode == 2


def test_nobody_listening_exits_1() -> None:
    result = send(str(SAMPLES / "adt_a01_admit.hl7"), "--to", "127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1 and "cannot connect" in result.stdout
