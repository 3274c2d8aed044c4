"""The streaming multipart/related parser: exact bodies, arbitrary chunkings, broken input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radbridge.interfaces.dicomweb.multipart import (
    BoundaryError,
    Event,
    MalformedBody,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartHeaderError,
    PartStart,
    PartTooLarge,
    boundary_of,
    media_type,
)

BOUNDARY = b"0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"

# Two parts exactly as dicomweb-client 0.61 frames them: the body opens with CRLF, each
# part has one Content-Type header, and the closing delimiter has no line end after it.
TWO_PARTS = (
    b"\r\n--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n\r\n"
    b"first body\r\n--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n\r\n"
    b"second\r\nbody with CRLF\r\n--" + BOUNDARY + b"--"
)


def parse(body: bytes, chunks: list[int] | None = None, **options: int) -> list[tuple[dict[
        str, str], bytes]]:
    """The parts of `body` fed in pieces of the given sizes (the rest in one piece)."""
    parser = MultipartParser(BOUNDARY, **options)  # type: ignore[arg-type]
    events: list[Event] = []
    position = 0
    for size in chunks or []:
        events += parser.feed(body[position:position + size])
        position += size
    events += parser.feed(body[position:])
    parser.close()
    return collect(events)


def collect(events: list[Event]) -> list[tuple[dict[str, str], bytes]]:
    parts: list[tuple[dict[str, str], bytes]] = []
    for event in events:
        if isinstance(event, PartStart):
            parts.append((event.headers, b""))
        elif isinstance(event, PartData):
            headers, data = parts[-1]
            parts[-1] = (headers, data + event.data)
        else:
            assert isinstance(event, PartEnd)
            assert event.size == len(parts[-1][1])
    return parts


def build(parts: list[tuple[dict[str, str], bytes]], *, preamble: bytes = b"",
          epilogue: bytes = b"") -> bytes:
    body = preamble
    for headers, data in parts:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        body += (b"\r\n" if body else b"") + b"--" + BOUNDARY + b"\r\n"
        body += lines.encode() + b"\r\n" + data
    return body + b"\r\n--" + BOUNDARY + b"--" + epilogue


def test_dicomweb_client_framing() -> None:
    parts = parse(TWO_PARTS)
    assert parts == [({"content-type": "application/dicom"}, b"first body"),
                     ({"content-type": "application/dicom"}, b"second\r\nbody with CRLF")]


def test_body_starting_with_delimiter_preamble_padding_and_epilogue() -> None:
    body = (b"ignored preamble\r\n--" + BOUNDARY + b"  \t\r\nContent-Type: a/b\r\n"
            b"Content-Location:\r\n  folded/value\r\n\r\nxyz\r\n--" + BOUNDARY
            + b"-- \r\nepilogue text, ignored")
    assert parse(body) == [({"content-type": "a/b", "content-location": "folded/value"},
                            b"xyz")]
    assert parse(b"--" + BOUNDARY + b"\r\nX: 1\r\n\r\n\r\n--" + BOUNDARY + b"--") == [
        ({"x": "1"}, b"")]


def test_data_is_streamed_before_the_part_ends() -> None:
    parser = MultipartParser(BOUNDARY)
    head = list(parser.feed(b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n\r\n"))
    assert head == [PartStart(0, {"content-type": "application/dicom"})]
    events = list(parser.feed(b"x" * 100_000))
    streamed = sum(len(e.data) for e in events if isinstance(e, PartData))
    assert streamed >= 100_000 - len(BOUNDARY) - 4  # only a delimiter's length held back
    assert not any(isinstance(e, PartEnd) for e in events)


def test_part_content_type_property() -> None:
    start = PartStart(0, {"content-type": 'Application/DICOM; transfer-syntax="1.2"'})
    assert start.content_type == "application/dicom"
    assert PartStart(1, {}).content_type == ""


@given(
    parts=st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(["content-type", "content-id", "x-note"]),
                            st.text("abcdefghij/;=.-0123456789", min_size=1, max_size=20)),
            # bodies drawn from bytes that include the delimiter's own characters
            st.binary(max_size=300).map(lambda b: b.replace(b"\r\n--" + BOUNDARY[:4], b"")),
        ).filter(lambda part: bool(part[0])),
        min_size=1, max_size=5,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=64), max_size=40),
)
@settings(max_examples=300, deadline=None)
def test_any_chunking_gives_the_same_parts(
    parts: list[tuple[dict[str, str], bytes]], cuts: list[int]
) -> None:
    body = build(parts)
    assert parse(body) == parts
    assert parse(body, cuts) == parts
    assert parse(body, [1] * len(body)) == parts


@given(body=st.binary(max_size=200), cut=st.integers(min_value=0, max_value=300))
@settings(max_examples=300, deadline=None)
def test_near_misses_of_the_delimiter_stay_in_the_body(body: bytes, cut: int) -> None:
    near = b"\r\n--" + BOUNDARY[:-1] + b"!" + b"\r\n-" + BOUNDARY + b"\r--" + BOUNDARY
    data = body[:cut] + near + body[cut:]
    if b"\r\n--" + BOUNDARY in data:
        return
    assert parse(build([({"content-type": "application/dicom"}, data)]), [cut % 7 + 1] * 50) \
        == [({"content-type": "application/dicom"}, data)]


@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_parse_or_raise_multipart_errors_only(body: bytes, step: int) -> None:
    parser = MultipartParser(BOUNDARY, max_part_size=100)
    try:  # random bytes that happen to parse are fine; any other exception type is a bug
        for start in range(0, len(body), step):
            list(parser.feed(body[start:start + step]))
        parser.close()
    except MultipartError:
        pass


@pytest.mark.parametrize(("body", "error", "words"), [
    (b"no delimiter anywhere", MalformedBody, "no delimiter"),
    (b"--" + BOUNDARY + b"\r\nContent-Type: a/b\r\n\r\ndata never closed", MalformedBody,
     "without the closing delimiter"),
    (b"--" + BOUNDARY + b"\r\nContent-Type: a/b\r\n\r\ndata\r\n--" + BOUNDARY, MalformedBody,
     "without the closing delimiter"),
    (b"--" + BOUNDARY + b"\r\nContent-Type: a/b", MalformedBody, "in part headers"),
    (b"--" + BOUNDARY + b"\r\nContent-Type: a/b\r\n\r\nx\r\n--" + BOUNDARY + b"X\r\n",
     MalformedBody, "is followed by"),
    (b"--" + BOUNDARY + b"junk\r\n", MalformedBody, "is followed by"),
    (b"--" + BOUNDARY + b"\r\n\r\nbody without headers\r\n--" + BOUNDARY + b"--",
     PartHeaderError, "no headers"),
    (b"--" + BOUNDARY + b"\r\nnot a header\r\n\r\nx\r\n--" + BOUNDARY + b"--",
     PartHeaderError, "a header line is not 'Name: value'"),
])
def test_broken_bodies_are_rejected(body: bytes, error: type[Exception], words: str) -> None:
    for chunks in (None, [1] * len(body)):
        with pytest.raises(error, match=words):
            parse(body, chunks)


def test_part_over_max_size() -> None:
    body = build([({"content-type": "a/b"}, b"x" * 1000)])
    assert parse(body, max_part_size=1000)[0][1] == b"x" * 1000
    with pytest.raises(PartTooLarge, match="part 1 is larger than 999 bytes"):
        parse(body, max_part_size=999)


def test_headers_too_large() -> None:
    body = b"--" + BOUNDARY + b"\r\nX: " + b"a" * 20_000
    with pytest.raises(PartHeaderError, match="exceed"):
        parse(body, [100] * 300)


def test_input_after_the_closing_delimiter_is_ignored() -> None:
    parser = MultipartParser(BOUNDARY)
    list(parser.feed(TWO_PARTS))
    assert parser.done and parser.parts == 2
    assert list(parser.feed(b"\r\n--" + BOUNDARY + b"\r\nX: 1\r\n\r\n")) == []
    parser.close()


def test_parts_before_a_break_are_delivered_before_the_error() -> None:
    body = build([({"content-type": "a/b"}, b"fine")])[:-2] + b"XX\r\n"
    parser = MultipartParser(BOUNDARY)
    seen: list[Event] = []
    with pytest.raises(MalformedBody, match="in part 2 is followed by something other"):
        for event in parser.feed(body):
            seen.append(event)
    assert collect(seen) == [({"content-type": "a/b"}, b"fine")]


@pytest.mark.parametrize(("value", "expected"), [
    ('multipart/related; type="application/dicom"; boundary="a b:c"', b"a b:c"),
    ("multipart/related; boundary=simple; type=application/dicom", b"simple"),
    ("Multipart/Related; BOUNDARY=UPPER", b"UPPER"),
])
def test_boundary_of(value: str, expected: bytes) -> None:
    assert boundary_of(value) == expected


@pytest.mark.parametrize("value", [
    "multipart/related; type=application/dicom",
    'multipart/related; boundary=""',
    'multipart/related; boundary="ends with space "',
    "multipart/related; boundary=" + "a" * 71,
    'multipart/related; boundary="bad{char}"',
])
def test_invalid_boundaries(value: str) -> None:
    with pytest.raises(BoundaryError):
        boundary_of(value)


def test_media_type() -> None:
    kind, params = media_type('multipart/related; type="application/dicom"; boundary=x')
    assert kind == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "x"}
