"""A-ASSOCIATE negotiation as the acceptor (PS3.8 section 7.1 and annex D).

pynetdicom decodes the A-ASSOCIATE-RQ (it is read once per association, not per
instance); the decision and the A-ASSOCIATE-AC are ours. We accept every storage SOP
class, Verification, MPPS and Storage Commitment Push, each with the first transfer
syntax the requestor proposes that the channel allows. A wrong called AE or a calling
AE not on the allow-list gets an A-ASSOCIATE-RJ naming that reason.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from pynetdicom import AllStoragePresentationContexts
from pynetdicom.pdu import A_ASSOCIATE_RQ as RequestPdu

from radbridge import __version__
from radbridge.interfaces.dimse import pdu
from radbridge.interfaces.dimse.pdu import AbortReason, UpperLayerError

IMPLEMENTATION_CLASS_UID = "2.25.42795122348146160584220532880342996151"
"""Radbridge's own implementation class UID (generated once in the 2.25 UUID form)."""
IMPLEMENTATION_VERSION_NAME = f"RADBRIDGE_{__version__}"[:16]
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

VERIFICATION = "1.2.840.10008.1.1"
MPPS = "1.2.840.10008.3.1.2.3.3"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
SUPPORTED = STORAGE_CLASSES | {VERIFICATION, MPPS, STORAGE_COMMITMENT}


class Result:
    """Presentation context results (PS3.8 9.3.3.2)."""

    ACCEPTANCE = 0
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


@dataclass(frozen=True)
class Policy:
    """What this SCP accepts; built from the channel's `dimse` source."""

    ae_title: str
    allowed_calling_aes: frozenset[str] = frozenset()
    transfer_syntaxes: tuple[str, ...] = ()
    max_pdu: int = 262_144


@dataclass(frozen=True, slots=True)
class AcceptedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class Association:
    """What was agreed: the contexts by id, and what we learned about the requestor."""

    calling_ae: str
    called_ae: str
    contexts: Mapping[int, AcceptedContext]
    peer_max_pdu: int
    peer_implementation: str | None = None
    roles: Mapping[str, tuple[bool, bool]] = field(default_factory=dict)
    """SOP class -> (requestor may be SCU, requestor may be SCP), from role selection."""
    refused: tuple[tuple[str, int], ...] = ()
    """Proposed contexts we did not accept: (abstract syntax, result reason)."""


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send, and why (for the log)."""

    result: int
    source: int
    reason: int
    why: str

    def encode(self) -> bytes:
        return pdu.a_associate_rj(self.result, self.source, self.reason)


def busy(limit: int) -> Rejection:
    """Rejected-transient, service-provider (presentation), local limit exceeded."""
    return Rejection(2, 3, 2, f"{limit} associations already open")


def negotiate(request: bytes, policy: Policy) -> tuple[Association, bytes] | Rejection:
    """Decide on a whole A-ASSOCIATE-RQ PDU: the association and its A-ASSOCIATE-AC,
    or the rejection. Raises UpperLayerError when the PDU cannot be decoded."""
    rq = _decode(request)
    calling, called = rq.calling_ae_title.strip(), rq.called_ae_title.strip()
    if rq.protocol_version & 1 == 0:
        return Rejection(1, 2, 2, f"protocol version {rq.protocol_version} not supported")
    if rq.application_context_name != APPLICATION_CONTEXT:
        return Rejection(1, 1, 2, "application context name not supported")
    if called != policy.ae_title:
        return Rejection(1, 1, 7, f"called AE {called!r} is not {policy.ae_title!r}")
    if policy.allowed_calling_aes and calling not in policy.allowed_calling_aes:
        return Rejection(1, 1, 3, f"calling AE {calling!r} is not on the allow-list")
    results: list[tuple[int, int, str]] = []
    accepted: dict[int, AcceptedContext] = {}
    for item in rq.presentation_context:
        context_id, syntax = item.context_id or 0, str(item.abstract_syntax or "")
        proposed = [str(ts) for ts in item.transfer_syntax]
        result, chosen = _choose(syntax, proposed, policy.transfer_syntaxes)
        results.append((context_id, result, chosen))
        if result == Result.ACCEPTANCE:
            accepted[context_id] = AcceptedContext(context_id, syntax, chosen)
    roles = _roles(rq, {cx.abstract_syntax for cx in accepted.values()})
    user = rq.user_information
    association = Association(
        calling_ae=calling, called_ae=called, contexts=accepted,
        peer_max_pdu=(user.maximum_length or 0) if user is not None else 0,
        peer_implementation=str(user.implementation_class_uid or "") if user else None,
        roles=roles,
        refused=tuple((str(item.abstract_syntax or ""), result) for item, (_, result, _)
                      in zip(rq.presentation_context, results, strict=True)
                      if result != Result.ACCEPTANCE))
    ac = _associate_ac(rq.called_ae_title, rq.calling_ae_title, results, roles, policy.max_pdu)
    return association, ac


def _decode(request: bytes) -> RequestPdu:
    rq = RequestPdu()
    try:
        rq.decode(request)
    except (ValueError, TypeError, IndexError, KeyError, struct.error, UnicodeDecodeError,
            AssertionError) as exc:  # pynetdicom asserts on item lengths
        raise UpperLayerError(f"undecodable A-ASSOCIATE-RQ: {exc}",
                              AbortReason.INVALID_PDU_PARAMETER_VALUE) from exc
    if not rq.presentation_context:
        raise UpperLayerError("A-ASSOCIATE-RQ without presentation contexts",
                              AbortReason.INVALID_PDU_PARAMETER_VALUE)
    return rq


def _choose(syntax: str, proposed: list[str], allowed: tuple[str, ...]) -> tuple[int, str]:
    fallback = proposed[0] if proposed else ""
    if syntax not in SUPPORTED:
        return Result.ABSTRACT_SYNTAX_NOT_SUPPORTED, fallback
    for candidate in proposed:
        if candidate in allowed:
            return Result.ACCEPTANCE, candidate
    return Result.TRANSFER_SYNTAXES_NOT_SUPPORTED, fallback


def _roles(rq: RequestPdu, accepted: set[str]) -> dict[str, tuple[bool, bool]]:
    """Role selection answers: the requestor keeps its SCU role; it may take the SCP
    role only for Storage Commitment (to receive N-EVENT-REPORTs)."""
    user = rq.user_information
    if user is None:
        return {}
    answers: dict[str, tuple[bool, bool]] = {}
    for uid, proposal in user.role_selection.items():
        if str(uid) not in accepted:
            continue
        answers[str(uid)] = (bool(proposal.scu_role),
                             bool(proposal.scp_role) and str(uid) == STORAGE_COMMITMENT)
    return answers


def _associate_ac(called: str, calling: str, results: list[tuple[int, int, str]],
                  roles: Mapping[str, tuple[bool, bool]], max_pdu: int) -> bytes:
    """The A-ASSOCIATE-AC PDU (PS3.8 9.3.3); the AE fields echo the request."""
    body = [struct.pack(">HH", 1, 0), _ae(called), _ae(calling), bytes(32),
            pdu.item(0x10, APPLICATION_CONTEXT.encode())]
    for context_id, result, syntax in results:
        body.append(pdu.item(0x21, bytes((context_id, 0, result, 0))
                             + pdu.item(0x40, syntax.encode())))
    user = [pdu.item(0x51, struct.pack(">L", max_pdu)),
            pdu.item(0x52, IMPLEMENTATION_CLASS_UID.encode())]
    for uid, (scu, scp) in roles.items():
        raw = uid.encode()
        user.append(pdu.item(0x54, struct.pack(">H", len(raw)) + raw + bytes((scu, scp))))
    user.append(pdu.item(0x55, IMPLEMENTATION_VERSION_NAME.encode()))
    body.append(pdu.item(0x50, b"".join(user)))
    return pdu.pdu(pdu.A_ASSOCIATE_AC, b"".join(body))


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16)
