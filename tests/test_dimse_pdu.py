"""The DICOM upper layer pieces of the SCP: PDU framing, command sets, negotiation, layout.

Fixtures are exact bytes with comments saying what they decode to; pynetdicom (an
independent implementation) builds the A-ASSOCIATE-RQ and decodes our A-ASSOCIATE-AC.
"""

from __future__ import annotations

import asyncio
import struct
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu import A_ASSOCIATE_RQ as RequestPdu
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import build_context

from radbridge.interfaces.dimse import commands, pdu
from radbridge.interfaces.dimse.association import (
    IMPLEMENTATION_CLASS_UID,
    MPPS,
    STORAGE_COMMITMENT,
    VERIFICATION,
    Association,
    Policy,
    Rejection,
    negotiate,
)
from radbridge.interfaces.dimse.layout import LayoutError, walk
from radbridge.interfaces.dimse.pdu import AbortReason, PeerClosed, UpperLayerError

CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT, EXPLICIT, JPEG_LS = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.80"

# A-RELEASE-RP: type 06, reserved, length 4, four reserved bytes.
RELEASE_RP = bytes.fromhex("06 00 00000004 00000000")
# A-ABORT from the service provider (source 2), reason 1 "unrecognized PDU".
ABORT_UNRECOGNIZED = bytes.fromhex("07 00 00000004 00 00 02 01")
# A-ASSOCIATE-RJ: rejected-permanent (1), service-user (1), calling AE not recognized (3).
REJECT_CALLING_AE = bytes.fromhex("03 00 00000004 00 01 01 03")
# P-DATA-TF with two PDVs: context 1 last command fragment "AB", context 3 data "XYZ"
# (not last). PDV = 4-byte item length (context id + control + data), id, control header.
TWO_PDVS = bytes.fromhex("04 00 00000011" "00000004 01 03 4142" "00000005 03 00 58595a")
# C-ECHO-RSP to message 7: Affected SOP Class (0000,0002) "1.2.840.10008.1.1\0",
# Command Field (0000,0100) 8030H, Responded To (0000,0120) 7, Data Set Type (0000,0800)
# 0101H (none), Status (0000,0900) 0000H; Command Group Length (0000,0000) 66.
ECHO_RSP = bytes.fromhex(
    "0000 0000 04000000 42000000"
    "0000 0200 12000000 312e322e3834302e31303030382e312e3100"
    "0000 0001 02000000 3080"
    "0000 2001 02000000 0700"
    "0000 0008 02000000 0101"
    "0000 0009 02000000 0000")


def test_small_pdus_are_the_standard_bytes() -> None:
    assert pdu.a_release_rp() == RELEASE_RP
    assert pdu.a_abort(pdu.AbortSource.SERVICE_PROVIDER,
                       AbortReason.UNRECOGNIZED_PDU) == ABORT_UNRECOGNIZED
    assert pdu.a_associate_rj(1, 1, 3) == REJECT_CALLING_AE
    # a service-user abort carries no reason, whatever is asked
    assert pdu.a_abort(pdu.AbortSource.SERVICE_USER, AbortReason.UNEXPECTED_PDU)[-2:] == b"\0\0"


def test_pdvs_are_cut_from_a_p_data_tf_as_views() -> None:
    pdvs = list(pdu.iter_pdvs(TWO_PDVS[6:]))
    assert [(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdvs] == [
        (1, True, True, b"AB"), (3, False, False, b"XYZ")]
    assert isinstance(pdvs[0].data, memoryview)
    assert pdu.p_data_tf(1, True, True, b"AB") == TWO_PDVS[:6 - 4] + bytes.fromhex(
        "00000008") + TWO_PDVS[6:14]


@pytest.mark.parametrize("body, problem", [
    (b"", "without a PDV"),
    (bytes.fromhex("00000010 01 03 4142"), "does not fit"),       # length past the end
    (bytes.fromhex("00000002 02 03"), "invalid PDV"),             # even context id
    (bytes.fromhex("00000003 01 07 41"), "invalid PDV"),          # control bits over 3
    (bytes.fromhex("0000"), "inside a PDV header"),
])
def test_malformed_p_data_tf_is_an_upper_layer_error(body: bytes, problem: str) -> None:
    with pytest.raises(UpperLayerError, match=problem):
        list(pdu.iter_pdvs(body))


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_any_bytes_give_pdvs_or_an_upper_layer_error(body: bytes) -> None:
    try:
        for item in pdu.iter_pdvs(body):
            assert item.context_id % 2 == 1
    except UpperLayerError:
        pass


def test_large_messages_are_fragmented_to_the_peers_max_pdu() -> None:
    message = bytes(range(256)) * 40
    fragments = pdu.fragment_message(5, False, message, 1000)
    assert all(len(f) <= 1000 + 6 for f in fragments)
    pdvs = [p for f in fragments for p in pdu.iter_pdvs(f[6:])]
    assert b"".join(bytes(p.data) for p in pdvs) == message
    assert [p.is_last for p in pdvs] == [False] * (len(pdvs) - 1) + [True]
    assert len(pdu.fragment_message(1, True, message, 0)) == 1  # 0: no limit


async def _reader(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()

    async def feed() -> None:
        for chunk in chunks:
            for byte in chunk:  # one byte at a time: TCP may cut anywhere
                reader.feed_data(bytes([byte]))
                await asyncio.sleep(0)
        if eof:
            reader.feed_eof()

    asyncio.get_running_loop().create_task(feed())
    return reader


async def test_pdus_are_read_whole_from_fragmented_reads() -> None:
    reader = await _reader(TWO_PDVS + RELEASE_RP)
    assert await pdu.read_pdu(reader, 0) == (pdu.P_DATA_TF, TWO_PDVS[6:])
    assert await pdu.read_pdu(reader, 0) == (pdu.A_RELEASE_RQ + 1, bytes(4))
    with pytest.raises(PeerClosed):
        await pdu.read_pdu(reader, 0)


async def test_unknown_pdu_types_and_oversized_pdus_are_refused_before_their_body() -> None:
    with pytest.raises(UpperLayerError) as caught:
        await pdu.read_pdu(await _reader(b"\x09\x00\x00\x00\x00\x04", eof=False), 0)
    assert caught.value.reason == AbortReason.UNRECOGNIZED_PDU
    with pytest.raises(UpperLayerError, match="exceeds"):
        await pdu.read_pdu(await _reader(b"\x04\x00\x7f\x00\x00\x00", eof=False), 1000)
    with pytest.raises(PeerClosed, match="inside a PDU"):
        await pdu.read_pdu(await _reader(TWO_PDVS[:10]), 0)


def test_command_sets_decode_and_responses_are_exact() -> None:
    request = commands.decode(commands.encode({
        commands.AFFECTED_SOP_CLASS: VERIFICATION, commands.COMMAND_FIELD: commands.C_ECHO_RQ,
        commands.MESSAGE_ID: 7, commands.DATA_SET_TYPE: commands.NO_DATA_SET}))
    assert (request.command_field, request.message_id, request.has_data_set) == (0x30, 7, False)
    assert request.sop_class == VERIFICATION
    assert commands.response(request, commands.Status.SUCCESS) == ECHO_RSP


def test_a_failure_response_carries_a_short_error_comment() -> None:
    store = commands.decode(commands.encode({
        commands.AFFECTED_SOP_CLASS: CT, commands.COMMAND_FIELD: commands.C_STORE_RQ,
        commands.MESSAGE_ID: 3, commands.PRIORITY: 0, commands.DATA_SET_TYPE: 0,
        commands.AFFECTED_SOP_INSTANCE: "1.2.3.4"}))
    assert store.has_data_set and store.sop_instance == "1.2.3.4"
    answer = commands.decode(commands.response(store, 0xC000, comment="x" * 100))
    assert answer.values[commands.STATUS] == 0xC000
    assert answer.command_field == commands.C_STORE_RSP
    assert answer.uid(commands.AFFECTED_SOP_INSTANCE) == "1.2.3.4"
    raw = commands.response(store, 0xC000, comment="x" * 100)
    assert b"x" * 64 in raw and b"x" * 65 not in raw


@given(st.binary(max_size=80))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_to_a_command_or_an_upper_layer_error(raw: bytes) -> None:
    try:
        command = commands.decode(raw)
    except UpperLayerError:
        return
    assert 0 <= command.command_field <= 0xFFFF


@pytest.mark.parametrize("raw, problem", [
    (b"\x00\x00\x00\x01\x02", "ends inside"),
    (struct.pack("<HHL", 8, 0x10, 0), "invalid command element"),
    (struct.pack("<HHLH", 0, 0x0110, 2, 1), "without a Command Field"),
    (struct.pack("<HHLL", 0, 0x0100, 4, 1), "is not US"),
])
def test_broken_command_sets_are_upper_layer_errors(raw: bytes, problem: str) -> None:
    with pytest.raises(UpperLayerError, match=problem):
        commands.decode(raw)


def _request(called: str = "RADBRIDGE", calling: str = "MODALITY",
             contexts: list[tuple[str, list[str]]] | None = None,
             roles: list[tuple[str, bool, bool]] = ()) -> bytes:  # type: ignore[assignment]
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    for number, (syntax, transfers) in enumerate(contexts or [(CT, [IMPLICIT])]):
        context = build_context(syntax, transfers)
        context.context_id = 2 * number + 1
        primitive.presentation_context_definition_list.append(context)
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.3.99"
    user: list[object] = [maximum, implementation]
    for uid, scu, scp in roles:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid, role.scu_role, role.scp_role = uid, scu, scp
        user.append(role)
    primitive.user_information = user
    request = RequestPdu()
    request.from_primitive(primitive)
    return request.encode()


POLICY = Policy("RADBRIDGE", frozenset(), (EXPLICIT, IMPLICIT, JPEG_LS), 65536)


def test_negotiation_accepts_storage_with_the_first_allowed_syntax_proposed() -> None:
    outcome = negotiate(_request(contexts=[
        (CT, ["1.2.840.10008.1.2.4.50", JPEG_LS, EXPLICIT]),   # JPEG baseline not allowed
        ("1.2.3.4.5", [IMPLICIT]),                              # unknown abstract syntax
        (VERIFICATION, ["1.2.840.10008.1.2.4.50"]),             # no allowed transfer syntax
        (MPPS, [IMPLICIT]), (STORAGE_COMMITMENT, [EXPLICIT]),
    ], roles=[(STORAGE_COMMITMENT, True, True), (CT, True, True)]), POLICY)
    assert not isinstance(outcome, Rejection)
    association, accept = outcome
    assert isinstance(association, Association)
    assert {i: (c.abstract_syntax, c.transfer_syntax) for i, c in association.contexts.items()
            } == {1: (CT, JPEG_LS), 7: (MPPS, IMPLICIT), 9: (STORAGE_COMMITMENT, EXPLICIT)}
    assert (association.calling_ae, association.peer_max_pdu) == ("MODALITY", 16384)
    ac = A_ASSOCIATE_AC()
    ac.decode(accept)  # pynetdicom reads what we wrote
    assert {c.context_id: (c.result, c.transfer_syntax) for c in ac.presentation_context} == {
        1: (0, JPEG_LS), 3: (3, IMPLICIT), 5: (4, "1.2.840.10008.1.2.4.50"),
        7: (0, IMPLICIT), 9: (0, EXPLICIT)}
    user = ac.user_information
    assert user is not None
    assert user.maximum_length == 65536
    assert user.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    # the requestor may take the SCP role for storage commitment only
    assert {str(uid): (item.scu_role, item.scp_role)
            for uid, item in user.role_selection.items()} == {
        STORAGE_COMMITMENT: (1, 1), CT: (1, 0)}


@pytest.mark.parametrize("request_bytes, reason", [
    (_request(called="OTHER"), 7),                    # called AE title not recognized
    (_request(calling="INTRUDER"), 3),                # calling AE title not recognized
])
def test_wrong_ae_titles_are_rejected_permanently_by_the_service_user(
        request_bytes: bytes, reason: int) -> None:
    policy = Policy("RADBRIDGE", frozenset({"MODALITY"}), (IMPLICIT,), 0)
    outcome = negotiate(request_bytes, policy)
    assert isinstance(outcome, Rejection)
    assert outcome.encode() == bytes.fromhex("03 00 00000004 00 01 01") + bytes([reason])


def test_an_undecodable_request_is_an_upper_layer_error() -> None:
    broken = bytearray(_request())
    broken[74:] = b"\x99" * (len(broken) - 74)
    with pytest.raises(UpperLayerError):
        negotiate(bytes(broken), POLICY)


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHL", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def test_the_walk_finds_pixel_data_and_catches_truncation() -> None:
    data_set = (_element(0x0008, 0x0016, b"UI", b"1.2.3\0")
                + _element(0x0028, 0x0010, b"US", b"\x02\x00")
                + _element(0x7FE0, 0x0010, b"OW", bytes(8)))
    layout = walk(BytesIO(data_set), 0, len(data_set), implicit=False, little=True)
    assert (layout.pixel_offset, layout.pixel_length) == (len(data_set) - 20, 8)
    with pytest.raises(LayoutError, match="truncated"):
        walk(BytesIO(data_set[:-1]), 0, len(data_set) - 1, implicit=False, little=True)
    with pytest.raises(LayoutError, match="not explicit VR"):
        implicit = struct.pack("<HHL", 0x0008, 0x0016, 6) + b"1.2.3\0"
        walk(BytesIO(implicit), 0, len(implicit), implicit=False, little=True)
