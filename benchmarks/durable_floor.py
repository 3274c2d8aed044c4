"""The floor the disk sets under a durable receive: the I/O alone, no protocol, no Python work.

For each instance: write its bytes to a new file, fsync it, rename it into a two-level
folder and fsync that folder (the blob store's steps), and commit one small row to
SQLite in WAL mode with `synchronous=FULL` (the store's commit). Nothing is parsed,
hashed or sent over a socket, so no receiver that makes an instance durable before
answering can beat this rate with one instance in flight (one association; storescu
waits for each answer). Measured two ways: the blob's fsync, then the commit
(sequential), and both at once on two threads (overlapped, as `radbridge run` does).

    python -m benchmarks.durable_floor FILE...   # prints instances/s for both ways
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hashlib
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

CHUNK = 256 * 1024
"""What one data PDU carries at Radbridge's default max PDU."""


class _Floor:
    """A blob folder and a SQLite file under `root`, with the engine's durability."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._incoming = root / "incoming"
        self._incoming.mkdir(parents=True)
        self._db = sqlite3.connect(root / "floor.db", isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE instances (id INTEGER PRIMARY KEY, uid TEXT, size INT)")

    def blob(self, number: int, content: bytes) -> None:
        fd, name = tempfile.mkstemp(dir=self._incoming, prefix="blob-")
        try:
            for start in range(0, len(content), CHUNK):
                os.write(fd, content[start:start + CHUNK])
            os.fsync(fd)
        finally:
            os.close(fd)
        key = hashlib.sha256(number.to_bytes(8, "big")).hexdigest()  # a name, not the content
        folder = self._root / key[:2] / key[2:4]
        folder.mkdir(parents=True, exist_ok=True)
        os.rename(name, folder / key)
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def commit(self, number: int, size: int) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("INSERT INTO instances (uid, size) VALUES (?, ?)",
                         (f"1.2.826.0.1.3680043.10.1.{number}", size))
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


def measure(contents: Sequence[bytes], workdir: Path, *, overlapped: bool) -> float:
    """Instances per second, one at a time, for the I/O alone."""
    floor = _Floor(Path(tempfile.mkdtemp(dir=workdir, prefix="floor-")))
    os.sync()
    began = time.perf_counter()
    for number, content in enumerate(contents):
        if overlapped:
            thread = threading.Thread(target=floor.blob, args=(number, content))
            thread.start()
            floor.commit(number, len(content))
            thread.join()
        else:
            floor.blob(number, content)
            floor.commit(number, len(content))
    seconds = time.perf_counter() - began
    floor.close()
    return len(contents) / seconds


def run(files: Sequence[Path], workdir: Path) -> list[dict[str, Any]]:
    """Rows for the DICOM runner: the floor, sequential and overlapped, 1 association."""
    contents = [path.read_bytes() for path in files]
    size = sum(map(len, contents))
    rows = []
    for overlapped in (False, True):
        per_s = measure(contents, workdir, overlapped=overlapped)
        how = "overlapped" if overlapped else "sequential"
        rows.append({"party": f"durable floor, {how}", "associations": 1,
                     "instances": len(contents), "seconds": round(len(contents) / per_s, 3),
                     "per_s": round(per_s, 1), "mb_per_s": round(size * per_s / len(contents)
                                                                 / 1e6, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory(prefix="rb-floor-") as workdir:
        for row in run(paths, Path(workdir)):
            print(f"{row['party']:<30} {row['per_s']:>8.1f} instances/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
