"""Radbridge's own exceptions, one small tree.

Errors from libraries below (SQLAlchemy, httpx, YAML, the OS) are translated at the
boundary where they occur into the most specific type here, with context, using
``raise ... from exc`` so the original stays attached::

    RadbridgeError
    ├── ConfigError                  a channel file is invalid (carries every ConfigIssue)
    ├── StoreError                   the message store or blob store failed
    │   ├── StoreUnavailable         cannot commit now: sources must not acknowledge
    │   └── BlobNotFound             a content hash names no blob
    ├── PipelineError                a filter or transformer failed for one message
    ├── DeliveryError                a destination did not take a delivery
    │   ├── TransientDeliveryError   worth retrying (peer down, timeout, 5xx)
    │   └── PermanentDeliveryError   retrying cannot help (4xx, rejected content)
    ├── AuditChainBroken             `audit verify` found an edited or missing row
    ├── AdapterSetupError            a source or destination cannot start (port, certificate)
    ├── Hl7Rejection                 an HL7 message refused at the door: AE/AR, ERR code, where
    │                                (radbridge.mappings.hl7.header)
    ├── Hl7ContentError              an HL7 message the registry cannot apply (hl7.errors)
    ├── Hl7EncodingError             a value that cannot go into an HL7 field (hl7.encoding)
    ├── DicomContentError            a DICOM data set without what it must carry; also a
    │                                ValueError (mappings.dicom.errors)
    ├── ResultFormatError            an AI result document with a wrong field (mappings.results)
    ├── QaError                      a QA input or setting that cannot be used; also a
    │   ├── QaConfigError            ValueError (qa.errors): a rule or threshold, named
    │   └── QaInputError             numbers the statistics cannot take (one class only, NaN)
    ├── ReportContentError           a final report that cannot be read or placed; also a
    │                                ValueError (engine.qa.reports)
    ├── EvaluationError              a held-out evaluation could not run (qa.held_out)
    │   └── HeldOutError             the held-out set is wrong: each problem's file, line, column
    ├── UnknownChannel               a name that no deployed channel has
    └── NotFound                     a message or delivery id that does not exist
"""

from __future__ import annotations

from dataclasses import dataclass


class RadbridgeError(Exception):
    """Root of every error Radbridge raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in one config file: where it is and what was expected."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ConfigError(RadbridgeError):
    """One or more config files are invalid; `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class StoreError(RadbridgeError):
    """The message store or the blob store failed."""


class StoreUnavailable(StoreError):
    """The store cannot commit right now; nothing was stored, so nothing may be acknowledged."""


class BlobNotFound(StoreError):
    """A content hash that names no blob in the blob store."""


class PipelineError(RadbridgeError):
    """A filter or transformer raised for one message; the message is marked errored."""

    def __init__(self, stage: str, step: str, reason: str) -> None:
        self.stage = stage
        self.step = step
        self.reason = reason
        super().__init__(f"{stage} {step!r} failed: {reason}")


class DeliveryError(RadbridgeError):
    """A destination did not accept a delivery."""


class TransientDeliveryError(DeliveryError):
    """The destination may accept it later: retry per the queue policy."""


class PermanentDeliveryError(DeliveryError):
    """The destination rejected the content itself: dead-letter without more attempts."""


class AuditChainBroken(RadbridgeError):
    """The audit ledger's hash chain does not verify."""

    def __init__(self, seq: int | None, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        where = f"at event {seq}" if seq is not None else "at the head"
        super().__init__(f"audit chain broken {where}: {reason}")


class AdapterSetupError(RadbridgeError):
    """A source or destination cannot start: a port in use, a certificate that will not load."""


class UnknownChannel(RadbridgeError):
    """A channel name that no loaded channel has."""


class NotFound(RadbridgeError):
    """A message or delivery id that does not exist."""
