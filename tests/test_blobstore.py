"""The blob store: content-addressed, streamed, and never half-written."""

from __future__ import annotations

import hashlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radbridge.engine.blobstore import BlobStore
from radbridge.errors import BlobNotFound


def test_put_is_addressed_by_content_and_idempotent(tmp_path):
    store = BlobStore(tmp_path)
    first = store.put_bytes(b"pixel data")
    again = store.put_file(io.BytesIO(b"pixel data"))
    assert first == again
    assert first.sha256 == hashlib.sha256(b"pixel data").hexdigest() and first.size == 10
    assert list(store.all_hashes()) == [first.sha256]


def test_large_content_streams_in_chunks(tmp_path):
    store = BlobStore(tmp_path)
    chunks = [bytes([i]) * 1_000_000 for i in range(5)]
    ref = store.put_chunks(iter(chunks))
    assert ref.size == 5_000_000
    read = list(store.iter_chunks(ref.sha256, chunk_size=1 << 20))
    assert b"".join(read) == b"".join(chunks) and max(len(c) for c in read) <= 1 << 20


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    store = BlobStore(tmp_path)

    def broken():
        yield b"first part"
        raise OSError("source went away")

    with pytest.raises(OSError):
        store.put_chunks(broken())
    assert list(store.all_hashes()) == []
    assert list((tmp_path / "incoming").iterdir()) == []


def test_missing_blob_is_its_own_error(tmp_path):
    with pytest.raises(BlobNotFound):
        BlobStore(tmp_path).read_bytes("0" * 64)


@settings(max_examples=30, deadline=None)
@given(parts=st.lists(st.binary(max_size=2000), max_size=8))
def test_any_chunking_round_trips(tmp_path_factory, parts):
    store = BlobStore(tmp_path_factory.mktemp("blobs"))
    ref = store.put_chunks(parts)
    assert store.read_bytes(ref.sha256) == b"".join(parts)
