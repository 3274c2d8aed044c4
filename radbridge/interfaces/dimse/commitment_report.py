"""Storage Commitment results sent on a new association back to the requester.

Many modalities release the association right after their N-ACTION and wait, as an
SCP, for the N-EVENT-REPORT on an association the archive opens (PS3.4 J.3.3, the
SCU/SCP role reversal). For a requester listed in the source's `commitment_peers` the
report goes that way: opened with the Storage Commitment Push Model in the SCP role,
tried a few times with a growing pause (the modality may not listen yet), and each
outcome is an audit event. It is not kept across a restart: the modality asks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import build_context, build_role

from radbridge.engine import audit
from radbridge.engine.adapters import AdapterContext
from radbridge.engine.config import DicomPeerConfig
from radbridge.errors import StoreError
from radbridge.interfaces.dimse.association import STORAGE_COMMITMENT
from radbridge.interfaces.dimse.scu import DicomClient, DimseError, check_status, release
from radbridge.mappings.dicom.commitment import STORAGE_COMMITMENT_SOP_INSTANCE

log = logging.getLogger(__name__)

PAUSES = (0.5, 2.0, 5.0, 15.0)
"""Seconds before each attempt."""


def send_report(peer: DicomPeerConfig, result: Dataset, event_type: int,
                resolve: Callable[[str], Path] = Path) -> int:
    """Open an association to the requester, send the N-EVENT-REPORT, release; blocking.
    Returns the status; raises DimseError when it could not be sent."""
    client = DicomClient(peer, resolve=resolve)
    assoc = client.associate([build_context(STORAGE_COMMITMENT)],
                             roles=[build_role(STORAGE_COMMITMENT, scu_role=False,
                                               scp_role=True)])
    try:
        status, _ = assoc.send_n_event_report(result, event_type, STORAGE_COMMITMENT,
                                              STORAGE_COMMITMENT_SOP_INSTANCE)
        return check_status(client.name, status, "N-EVENT-REPORT")
    finally:
        release(assoc)


async def deliver(peer: DicomPeerConfig, result: Dataset, event_type: int, *,
                  channel: str, context: AdapterContext,
                  pauses: tuple[float, ...] = PAUSES) -> bool:
    """Send the report, retrying; True once the requester took it."""
    transaction = str(result.get("TransactionUID", ""))
    problem = ""
    for attempt, pause in enumerate(pauses, 1):
        await asyncio.sleep(pause)
        try:
            await asyncio.to_thread(send_report, peer, result, event_type, context.resolve)
        except DimseError as exc:
            problem = str(exc)
            log.info("channel %s: storage commitment result for %s, attempt %d: %s",
                     channel, peer.ae_title, attempt, problem)
            continue
        await _audit(context, channel, peer, transaction, "success",
                     {"event_type": event_type, "attempts": attempt})
        return True
    log.warning("channel %s: storage commitment result for %s not delivered: %s", channel,
                peer.ae_title, problem)
    await _audit(context, channel, peer, transaction, "failure",
                 {"event_type": event_type, "attempts": len(pauses), "error": problem[:300]})
    return False


async def _audit(context: AdapterContext, channel: str, peer: DicomPeerConfig,
                 transaction: str, outcome: str, detail: dict[str, object]) -> None:
    event = audit.AuditRecord(
        action="dicom.commitment-reported", actor=f"channel:{channel}", outcome=outcome,
        channel=channel, detail={"requester": peer.ae_title, "transaction_uid": transaction,
                                 **detail})
    try:
        await asyncio.to_thread(audit.append_now, context.database, [event],
                                f"{context.node_id}/dimse")
    except StoreError as exc:
        log.warning("channel %s: could not record the commitment report: %s", channel,
                    type(exc).__name__)
