"""The `qa-reports` destination: each delivered final report becomes the radiologist's
call per finding in the QA store (radbridge.engine.qa.reports says how it is read and
which study it is placed on).

- HL7 v2 ORU^R01 with OBR-25 F or C, a FHIR DiagnosticReport final, amended or
  corrected: read, stored, audited (`qa.report`), in one transaction.
- A preliminary report, Radbridge's own AI result, any other message or resource:
  accepted and ignored, the detail says why (a RIS feed carries all of them).
- Content that cannot be read, or a report naming neither a study nor an accession:
  PermanentDeliveryError, so the delivery is dead-lettered and kept for a person.
- A report whose study is not known yet is stored all the same, waiting by accession
  (not retried): most reports of a RIS are for studies no model ever sees, and
  retrying each of them would fill the dead letters; the wait ends when the study's
  AI result is recorded.

Report text is never logged nor put in an error: it is PHI.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import IntegrityError

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import QaReportsDestination
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.qa.reports import (
    NotFinal,
    ReportContentError,
    read_report,
    record_report,
)
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.qa.reading import DEFAULT_RULES, rules_from_config

log = logging.getLogger(__name__)


class QaReportSink:
    """Reads each delivery's report and stores its reads (the store work on a thread)."""

    def __init__(self, config: QaReportsDestination, context: AdapterContext) -> None:
        self._rules = DEFAULT_RULES if config.rules is None else rules_from_config(config.rules)
        self._context = context

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        return await asyncio.to_thread(self.apply, delivery)

    async def close(self) -> None:
        return None

    def apply(self, delivery: OutboundDelivery) -> SendResult:
        """The blocking part of `send`: read the content, place it, commit."""
        content = b"".join(self._context.content_chunks(delivery))
        try:
            report = read_report(content, delivery.content_type)
        except (Hl7ContentError, ReportContentError) as exc:
            raise PermanentDeliveryError(f"not a readable final report: {exc}") from exc
        if isinstance(report, NotFinal):
            return SendResult(detail=f"{report.reason}; ignored")
        chain = f"{self._context.node_id}/qa/{delivery.channel}/{delivery.destination}"
        try:
            with self._context.database.write() as session:
                recorded = record_report(
                    session, report, self._rules, message_id=delivery.message_id,
                    channel=delivery.channel, patient_id=delivery.patient_id,
                    actor=f"channel:{delivery.channel}", chain=chain)
        except ReportContentError as exc:
            raise PermanentDeliveryError(f"final report cannot be placed: {exc}") from exc
        except IntegrityError as exc:  # a read of the same study stored meanwhile
            raise TransientDeliveryError("a report of the same study was stored at the "
                                         "same time; trying again") from exc
        log.info("final report of message %s: %d finding(s) read, %s", delivery.message_id,
                 len(recorded.reads), ", ".join(recorded.studies) or "waiting for its study")
        return SendResult(detail=recorded.summary)


@destination_type("qa-reports")
def _qa_reports(config: QaReportsDestination, context: AdapterContext) -> Destination:
    return QaReportSink(config, context)
