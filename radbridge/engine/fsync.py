"""Making a file or a directory entry durable by path (the blob store's folders, the
SQLite store's write-ahead log)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> os.stat_result:
    """fsync the file or directory at `path` (raises FileNotFoundError when there is none);
    returns its stat, taken on the same open file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)
