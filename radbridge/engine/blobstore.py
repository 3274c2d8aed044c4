"""Content-addressed blob store on disk for payloads too large to keep in the database.

A blob is named by the SHA-256 of its bytes and written once: to a temporary file in
the same folder tree, fsynced, then renamed into place, so a crash leaves either the
whole blob or nothing under its name. Content is streamed in and out in chunks and is
never held whole in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from radbridge.errors import BlobNotFound, StoreUnavailable

CHUNK = 1 << 20
_T = TypeVar("_T")


@dataclass(frozen=True)
class BlobRef:
    """What the database keeps about a blob."""

    sha256: str
    size: int


class BlobStore:
    """Blobs under `root/ab/cd/<sha256>`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._incoming = root / "incoming"

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def put_bytes(self, data: bytes) -> BlobRef:
        return self.put_chunks([data])

    def put_file(self, source: BinaryIO) -> BlobRef:
        """Stream an open binary file into the store."""
        return self.put_chunks(iter(lambda: source.read(CHUNK), b""))

    def put_chunks(self, chunks: Iterable[bytes]) -> BlobRef:
        """Store the concatenation of `chunks`; an existing identical blob is kept as is.

        Errors raised by `chunks` itself (the sender went away) pass through unchanged;
        failures of the store's own disk become StoreUnavailable. Either way the
        temporary file is removed.
        """
        temp = self._temp_file()
        try:
            digest = hashlib.sha256()
            size = 0
            with temp.open("wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    self._disk(out.write, chunk)
                self._disk(out.flush)
                self._disk(os.fsync, out.fileno())
            ref = BlobRef(digest.hexdigest(), size)
            final = self.path(ref.sha256)
            if final.exists():
                temp.unlink()
            else:
                self._disk(final.parent.mkdir, parents=True, exist_ok=True)
                self._disk(os.replace, temp, final)
                self._disk(_fsync_dir, final.parent)
            return ref
        finally:
            temp.unlink(missing_ok=True)

    def _temp_file(self) -> Path:
        def make() -> Path:
            self._incoming.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self._incoming, prefix="blob-")
            os.close(fd)
            return Path(name)

        return self._disk(make)

    def _disk(self, operation: Callable[..., _T], *args: object, **kwargs: object) -> _T:
        """Run one file operation of the store, translating OSError at this boundary."""
        try:
            return operation(*args, **kwargs)
        except OSError as exc:
            raise StoreUnavailable(f"blob store cannot write under {self.root}: {exc}") from exc

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(f"no blob {sha256}") from exc

    def iter_chunks(self, sha256: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with self.open(sha256) as blob:
            yield from iter(lambda: blob.read(chunk_size), b"")

    def read_bytes(self, sha256: str) -> bytes:
        """The whole blob: only for content a transformer must see in memory."""
        with self.open(sha256) as blob:
            return blob.read()

    def delete(self, sha256: str) -> int:
        """Remove a blob; returns the bytes freed (0 when it was not there)."""
        path = self.path(sha256)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return 0

    def all_hashes(self) -> Iterator[str]:
        """Every stored blob's hash (for garbage collection of orphans)."""
        for path in self.root.glob("??/??/*"):
            if path.is_file() and len(path.name) == 64:
                yield path.name

    def clean_incoming(self, older_than: float) -> int:
        """Remove temporary files a crash left behind, untouched for `older_than` seconds
        (younger ones may be blobs being written right now); returns how many."""
        if not self._incoming.exists():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for leftover in self._incoming.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
        return removed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
