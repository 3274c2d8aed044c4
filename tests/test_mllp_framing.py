"""MLLP framing: frames cut anywhere by TCP come out whole; faults are events, memory bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from radbridge.interfaces.mllp.framing import (
    Frame,
    FrameDecoder,
    Oversize,
    Stray,
    Unterminated,
    frame,
)

MESSAGES = [b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5.1\rPID|1\r", b"MSH|2", b"x" * 300]


def decode_in_pieces(data: bytes, cuts: list[int], max_size: int = 1024):
    decoder = FrameDecoder(max_size, keep=16)
    events = []
    position = 0
    for cut in sorted(set(cuts)):
        events += decoder.feed(data[position:cut])
        position = cut
    events += decoder.feed(data[position:])
    return events + decoder.close()


def test_several_frames_in_one_read_come_out_in_order():
    data = b"".join(frame(m) for m in MESSAGES)
    assert FrameDecoder(1024).feed(data) == [Frame(m) for m in MESSAGES]


def test_an_end_block_split_across_two_reads():
    data = frame(b"MSH|1")
    decoder = FrameDecoder(1024)
    assert decoder.feed(data[:-1]) == []  # ends with 0x1C
    assert decoder.feed(data[-1:]) == [Frame(b"MSH|1")]


@given(st.lists(st.integers(min_value=0, max_value=500), max_size=20))
def test_frames_cut_at_any_points_decode_the_same(cuts):
    data = b"".join(frame(m) for m in MESSAGES)
    cuts = [c for c in cuts if c <= len(data)]
    assert decode_in_pieces(data, cuts) == [Frame(m) for m in MESSAGES]


def test_a_frame_over_the_limit_is_reported_with_its_size_and_not_buffered():
    decoder = FrameDecoder(max_size=100, keep=10)
    events = decoder.feed(b"\x0b" + b"a" * 60)
    events += decoder.feed(b"b" * 5000)
    assert decoder.buffered <= 11  # the kept prefix and a possible half end block
    events += decoder.feed(b"c\x1c")
    events += decoder.feed(b"\x0d" + frame(b"MSH|next"))
    assert events == [Oversize(b"a" * 10, 5061), Frame(b"MSH|next")]


def test_a_new_start_block_cuts_an_unterminated_frame():
    events = FrameDecoder(1024).feed(b"\x0bMSH|first" + frame(b"MSH|second"))
    assert events == [Unterminated(b"MSH|first", 9, at_close=False), Frame(b"MSH|second")]


def test_a_frame_left_open_at_close_is_reported():
    decoder = FrameDecoder(1024)
    assert decoder.feed(b"\x0bMSH|half") == []
    assert decoder.close() == [Unterminated(b"MSH|half", 8, at_close=True)]


def test_garbage_outside_frames_is_reported_once_and_whitespace_is_ignored():
    decoder = FrameDecoder(1024)
    events = decoder.feed(b"\r\n" + frame(b"MSH|1") + b"\r\n")
    events += decoder.feed(b"GET / HTTP/1.1\r\n")
    events += decoder.feed(b"more garbage")
    events += decoder.close()
    assert events == [Frame(b"MSH|1"), Stray(b"GET / HTTP/1.1\r\nmore garbage", 28)]


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_arbitrary_bytes_never_raise_and_memory_stays_bounded(data, cuts):
    decoder = FrameDecoder(max_size=256, keep=32)
    position = 0
    for cut in sorted(c for c in set(cuts) if c <= len(data)):
        for event in decoder.feed(data[position:cut]):
            if isinstance(event, Frame):
                assert len(event.content) <= 256
                assert b"\x0b" not in event.content
        assert decoder.buffered <= 257
        position = cut
    decoder.feed(data[position:])
    decoder.close()
    assert not decoder.in_frame
