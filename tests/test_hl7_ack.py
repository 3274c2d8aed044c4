"""The hot-path header reader and the ACKs we emit: conformant, and total on any input."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radbridge.engine.config import MllpSource
from radbridge.interfaces.mllp.framing import Frame, Oversize, Stray, Unterminated
from radbridge.interfaces.mllp.intake import Hl7Intake
from radbridge.mappings.hl7.ack import ack_code_for, build_ack
from radbridge.mappings.hl7.header import Hl7Rejection, read_header
from tests.hl7_support import adt_a01
from tests.test_hl7_builders import assert_valid_hl7

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
INTAKE = Hl7Intake("hl7in", MllpSource(type="mllp"))


@pytest.mark.parametrize(("code", "rejection"), [
    ("AA", None),
    ("AE", Hl7Rejection("AE", 100, "required segment PID is missing | here", "PID")),
    ("AR", Hl7Rejection("AR", 203, "version '9.9' is not accepted here", "MSH-12")),
])
def test_acks_pass_strict_validation_and_echo_the_control_id(code, rejection) -> None:
    header = read_header(adt_a01("CTRL^7"))
    text = build_ack(header, code, application="RADBRIDGE", facility="GHH", at=NOW,
                     rejection=rejection)
    assert text is not None
    assert_valid_hl7(text)
    ack = hl7.parse(text)
    assert str(ack.segment("MSA")(1)) == code
    assert ack["MSA.F2"] == "CTRL^7"  # escaped on the wire, the same id after parsing
    assert ack["MSH.F5"] == "ADT1" and ack["MSH.F9.R1.C2"] == "A01"
    if rejection is not None:
        assert ack["ERR.F3.R1.C1"] == str(rejection.error_code)
        assert ack["ERR.F8"] == rejection.reason


def test_versions_before_2_5_carry_the_error_in_err_1() -> None:
    header = read_header(adt_a01("OLD", version="2.3"))
    text = build_ack(header, "AE", application="RADBRIDGE", facility="", at=NOW,
                     rejection=Hl7Rejection("AE", 101, "MSH-10 is empty", "MSH-10"))
    assert text is not None
    err = text.split("\r")[2]
    assert err.startswith("ERR|MSH^1^10^101&MSH-10 is empty&HL70357")
    assert "|2.3\r" in text


@pytest.mark.parametrize(("accept", "code", "sent"), [
    ("AL", "AA", "CA"), ("AL", "AE", "CE"), ("AL", "AR", "CR"),
    ("NE", "AA", None), ("NE", "AE", None),
    ("ER", "AA", None), ("ER", "AE", "CE"),
    ("SU", "AA", "CA"), ("SU", "AR", None),
])
def test_enhanced_mode_follows_msh_15(accept, code, sent) -> None:
    header = read_header(adt_a01("ENH", extra_msh=f"|||{accept}|AL"))
    assert header.enhanced_mode
    assert ack_code_for(header, code) == sent


def test_original_mode_always_answers() -> None:
    header = read_header(adt_a01("ORIG"))
    assert not header.enhanced_mode
    assert [ack_code_for(header, c) for c in ("AA", "AE", "AR")] == ["AA", "AE", "AR"]


@settings(max_examples=400)
@given(st.one_of(
    st.text(max_size=600),
    st.builds(lambda head, tail: head + tail,
              st.sampled_from(["MSH|^~\\&|", "MSH", "MSH|", "MSH#^~\\&#", "MSH|^~|"]),
              st.text(max_size=400)),
    st.builds(lambda cut: adt_a01("FUZZ")[:cut], st.integers(min_value=0, max_value=420)),
))
def test_read_header_accepts_or_rejects_but_never_fails(text) -> None:
    try:
        header = read_header(text)
    except Hl7Rejection as rejection:
        assert rejection.ack_code in ("AE", "AR") and rejection.reason
        return
    assert header.control_id and header.version and header.message_code


@settings(max_examples=300)
@given(st.binary(max_size=800), st.sampled_from(["frame", "oversize", "cut", "stray"]))
def test_every_framing_event_is_judged_and_answerable(data, kind) -> None:
    event = {"frame": Frame(data), "oversize": Oversize(data, len(data) + 10**7),
             "cut": Unterminated(data, len(data), at_close=False),
             "stray": Stray(data, len(data))}[kind]
    examined = INTAKE.examine(event, "127.0.0.1:1")
    assert examined.inbound.content == data
    assert (examined.rejection is None) == (examined.inbound.rejected is None)
    for stored in (True, False):
        ack = INTAKE.acknowledgement(examined, stored=stored)
        if ack is not None:
            parsed = hl7.parse(ack.decode("utf-8", errors="replace"))
            expected = examined.code if stored else "AR"
            assert str(parsed.segment("MSA")(1)) in (expected, "C" + expected[1])
