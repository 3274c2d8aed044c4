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

from radbridge.engine.fsync import fsync_path
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
        self._made: set[Path] = set()
        """Folders known to exist: creating them again costs a system call per blob."""

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
        with self.writer() as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def writer(self) -> BlobWriter:
        """A blob written piece by piece as data arrives (a network read loop), then
        committed; use it as a context manager so an abandoned one leaves nothing."""
        return BlobWriter(self)

    def _place(self, temp: Path, ref: BlobRef) -> None:
        final = self.path(ref.sha256)
        if final.exists():
            temp.unlink()
        else:
            self._folder(final.parent)
            try:
                os.replace(temp, final)
            except FileNotFoundError:  # the folder was removed since we made it
                self._made.discard(final.parent)
                self._folder(final.parent)
                self._disk(os.replace, temp, final)
            except OSError as exc:
                raise StoreUnavailable(f"blob store cannot write under {self.root}: {exc}"
                                       ) from exc
            self._disk(fsync_path, final.parent)

    def _folder(self, folder: Path) -> None:
        if folder not in self._made:
            self._disk(folder.mkdir, parents=True, exist_ok=True)
            self._made.add(folder)

    def _temp_file(self) -> Path:
        def make() -> Path:
            self._folder(self._incoming)
            try:
                fd, name = tempfile.mkstemp(dir=self._incoming, prefix="blob-")
            except FileNotFoundError:  # the folder was removed since we made it
                self._made.discard(self._incoming)
                self._folder(self._incoming)
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


class BlobWriter:
    """One blob being written: `write` chunks, then `commit` (fsync, rename into place).

    `temp_path` may be read (e.g. to parse a DICOM header) before the commit. Leaving
    the `with` block without a commit removes the temporary file.
    """

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self.temp_path = store._temp_file()
        self._out = store._disk(self.temp_path.open, "wb")
        self._digest = hashlib.sha256()
        self.size = 0
        self._ref: BlobRef | None = None

    def write(self, chunk: bytes | memoryview) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)
        self._store._disk(self._out.write, chunk)

    def flush(self) -> None:
        """Make what was written so far readable through `temp_path` (not yet durable)."""
        self._store._disk(self._out.flush)

    def pending_ref(self) -> BlobRef:
        """The reference the blob will have once committed (hash and size of what was
        written so far): lets a caller record it while the commit's fsync runs."""
        return self._ref or BlobRef(self._digest.hexdigest(), self.size)

    def commit(self) -> BlobRef:
        """Make the blob durable under its hash; returns its reference."""
        if self._ref is not None:
            return self._ref
        self._store._disk(self._out.flush)
        self._store._disk(os.fsync, self._out.fileno())
        self._out.close()
        ref = BlobRef(self._digest.hexdigest(), self.size)
        self._store._place(self.temp_path, ref)
        self._ref = ref
        return ref

    def abort(self) -> None:
        if not self._out.closed:
            self._out.close()
        self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._ref is None:
            self.abort()
