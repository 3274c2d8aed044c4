"""Channel configuration: the pydantic models every channel YAML file must satisfy.

Config is data (ARCHITECTURE principle 6). Every model forbids unknown keys so a typo
is an error naming the key, not a silently ignored setting. Loading files, mapping
errors back to YAML lines and cross-file checks live in `config_loader`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydicom.datadict import tag_for_keyword

from radbridge.engine.alerts.config import (
    DeadLettersRule,
    DriftRule,
    ErrorRateRule,
    PeerDownRule,
    QueueAgeRule,
)
from radbridge.engine.units import ByteSize, Duration
from radbridge.qa.reading import rules_from_config

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
"""Channel and destination names: lower case, digits, '-' and '_', at most 63 characters."""

DOTTED_PATH_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
DottedPath = Annotated[str, Field(pattern=DOTTED_PATH_PATTERN)]
"""A Python callable as 'package.module:function'."""

MESSAGE_FIELDS = ("content", "content_type", "source", "patient_id", "accession", "study_uid")
"""Fields of a message that filters and ordering keys may name, besides 'metadata.KEY'."""


def check_message_field(value: str) -> str:
    """Accept a message field name or 'metadata.KEY'."""
    if value in MESSAGE_FIELDS or re.fullmatch(r"metadata\.[\w.-]+", value):
        return value
    raise ValueError(f"expected one of {', '.join(MESSAGE_FIELDS)} or metadata.KEY, got {value!r}")


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- filters and transformers --------------------------------------------------------


class FilterRule(StrictModel):
    """One test on a message field; exactly one operator per rule."""

    field: str
    equals: str | None = None
    one_of: list[str] | None = Field(default=None, alias="in")
    matches: str | None = None
    contains: str | None = None
    exists: bool | None = None
    negate: bool = False

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    _check_field = field_validator("field")(classmethod(lambda cls, v: check_message_field(v)))

    @field_validator("matches")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"expected a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> FilterRule:
        given = [
            name
            for name in ("equals", "one_of", "matches", "contains", "exists")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one operator of equals, in, matches, contains, exists"
                f" (got {len(given)})"
            )
        return self


class FilterConfig(StrictModel):
    """Which messages go on: rules combined with all/any, or a Python function."""

    mode: Literal["all", "any"] = "all"
    rules: list[FilterRule] = Field(default_factory=list)
    function: DottedPath | None = None

    @model_validator(mode="after")
    def _rules_or_function(self) -> FilterConfig:
        if bool(self.rules) == bool(self.function):
            raise ValueError("expected either 'rules' or 'function', not both and not neither")
        return self


class TransformerConfig(StrictModel):
    """A mapping step: a function registered in radbridge.mappings, or a dotted path."""

    name: str | None = None
    function: DottedPath | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"function": value} if ":" in value else {"name": value}
        return value

    @model_validator(mode="after")
    def _name_or_function(self) -> TransformerConfig:
        if bool(self.name) == bool(self.function):
            raise ValueError("expected either 'name' or 'function', not both and not neither")
        return self

    @property
    def label(self) -> str:
        """How this step is named in stage records and errors."""
        return self.name or self.function or "?"


# --- queue policy --------------------------------------------------------------------


class BackoffPolicy(StrictModel):
    """Exponential backoff with jitter between delivery attempts."""

    initial: Duration = 1.0
    multiplier: float = Field(default=2.0, ge=1.0)
    max: Duration = 300.0
    jitter: Duration = 1.0


class QueuePolicy(StrictModel):
    """How one destination's outbox retries, orders and dead-letters deliveries."""

    max_attempts: int = Field(default=10, ge=1, le=10_000)
    backoff: BackoffPolicy = Field(default_factory=BackoffPolicy)
    max_age: Duration | None = None
    ordering_key: str | None = None
    concurrency: int = Field(default=1, ge=1, le=64)
    lease: Duration = Field(default=60.0, ge=1.0)

    @field_validator("ordering_key")
    @classmethod
    def _known_field(cls, value: str | None) -> str | None:
        if value is not None and value in ("content", "content_type"):
            raise ValueError("expected an identifying field (patient_id, accession, metadata.KEY)")
        return None if value is None else check_message_field(value)


# --- destinations --------------------------------------------------------------------


class DestinationBase(StrictModel):
    """What every destination has: a name, an optional filter and a queue policy."""

    name: Name
    filter: FilterConfig | None = None
    queue: QueuePolicy = Field(default_factory=QueuePolicy)


class NullDestination(DestinationBase):
    """Accepts and discards: for benchmarks and for channels that only archive."""

    type: Literal["null"]


class FileDestination(DestinationBase):
    """Writes each delivery to a file, atomically, named from its idempotency key."""

    type: Literal["file"]
    directory: str
    filename: str = "{idempotency_key}.msg"

    @field_validator("filename")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        allowed = {"idempotency_key", "message_id", "channel", "destination", "generation"}
        used = set(re.findall(r"{(\w+)}", value))
        if unknown := used - allowed:
            raise ValueError(
                f"unknown placeholder {sorted(unknown)}; expected any of {sorted(allowed)}"
            )
        if "/" in value or value.startswith("."):
            raise ValueError("expected a plain file name without '/' or a leading '.'")
        return value


class HttpDestination(DestinationBase):
    """POSTs (or PUTs) each delivery with an Idempotency-Key header."""

    type: Literal["http"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 30.0
    retry_on_status: list[int] = Field(default_factory=lambda: [408, 425, 429, 500, 502, 503, 504])


class ChannelDestination(DestinationBase):
    """Hands the message to another channel whose source is of type 'channel'."""

    type: Literal["channel"]
    channel: Name


class TlsConfig(StrictModel):
    """TLS for a listener or a client; certificate paths are relative to the data directory.

    On a listener, `ca` plus `require_client_cert` makes it mutual TLS; on a client, `cert`
    and `key` are the client certificate presented to the peer and `ca` verifies the peer.
    """

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    require_client_cert: bool = False
    verify_peer: bool = True

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("expected 'cert' and 'key' together")
        if self.require_client_cert and self.ca is None:
            raise ValueError("expected 'ca' (the issuers of accepted client certificates)"
                             " when require_client_cert is true")
        return self


AckAction = Literal["retry", "dead-letter"]
"""What an MLLP destination does with a negative or missing acknowledgement."""


class MllpDestination(DestinationBase):
    """Sends HL7 v2 over MLLP on a persistent connection and waits for each ACK."""

    type: Literal["mllp"]
    host: str
    port: int = Field(ge=1, le=65535)
    tls: TlsConfig | None = None
    connect_timeout: Duration = 10.0
    ack_timeout: Duration = 30.0
    on_ae: AckAction = "dead-letter"
    on_ar: AckAction = "retry"
    on_timeout: AckAction = "retry"
    max_message_size: ByteSize = 16 * 2**20


class RegistryDestination(DestinationBase):
    """Applies ADT and order messages to the patient/encounter/order registry."""

    type: Literal["registry"]
    default_issuer: str | None = None


AE_TITLE_PATTERN = r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$"
AeTitle = Annotated[str, Field(pattern=AE_TITLE_PATTERN)]
"""A DICOM AE title: 1 to 16 printable ASCII characters, no backslash, no edge spaces."""


class DicomPeerConfig(StrictModel):
    """A DIMSE peer (PACS or modality): where it listens and the AE titles on both sides."""

    ae_title: AeTitle
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae: AeTitle = "RADBRIDGE"
    tls: TlsConfig | None = None
    connect_timeout: Duration = 10.0
    response_timeout: Duration = 60.0
    """Seconds to wait for a DIMSE response (C-STORE, C-FIND, C-MOVE) before giving up."""


class DimseDestination(DestinationBase):
    """Sends DICOM instances (our SR, SEG, overlays) by C-STORE on a reused association."""

    type: Literal["dimse"]
    peer: DicomPeerConfig


class StowRsDestination(DestinationBase):
    """Sends DICOM instances by STOW-RS to a DICOMweb base URL (e.g. .../dicom-web)."""

    type: Literal["stow-rs"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 60.0


class DicomRetrieveDestination(DestinationBase):
    """Fetches the study a message names (study_uid, else accession) from a PACS.

    Used on order channels: the order arrives, the study is already in the PACS, so it is
    retrieved into one of our own sources (C-MOVE to `move_destination`, C-GET, or WADO-RS).
    """

    type: Literal["dicom-retrieve"]
    peer: DicomPeerConfig | None = None
    dicomweb_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    method: Literal["c-move", "c-get", "wado-rs"] = "c-move"
    move_destination: AeTitle = "RADBRIDGE"
    """The AE title the PACS knows our C-STORE SCP by (for C-MOVE)."""
    into_channel: Name | None = None
    """For C-GET and WADO-RS: the DICOM channel that receives what was retrieved."""

    @model_validator(mode="after")
    def _has_a_way(self) -> DicomRetrieveDestination:
        if self.method == "wado-rs" and self.dicomweb_url is None:
            raise ValueError("expected dicomweb_url for method wado-rs")
        if self.method != "wado-rs" and self.peer is None:
            raise ValueError(f"expected peer for method {self.method}")
        if self.method in ("c-get", "wado-rs") and self.into_channel is None:
            raise ValueError(f"expected into_channel for method {self.method}")
        return self


CorrelationRule = Literal["study_uid", "accession", "patient_window"]


def _all_rules() -> list[CorrelationRule]:
    return ["study_uid", "accession", "patient_window"]


class CorrelationDestination(DestinationBase):
    """Links the study of each study-ready message to its order(s) in the registry, by the
    rules in order; what they cannot place goes to the reconciliation queue."""

    type: Literal["correlation"]
    rules: list[CorrelationRule] = Field(default_factory=_all_rules, min_length=1)
    window: Duration = 2 * 86_400.0
    """How far an order's scheduled time may be from the study date (patient_window)."""


class FhirDestination(DestinationBase):
    """Sends each delivery (a FHIR R4 transaction or batch Bundle, JSON) to a FHIR
    server's base URL (the EHR) and reads the transaction-response: 2xx sent; 400/422
    with an OperationOutcome a final failure (kept, with the outcome's diagnostics);
    408/429/5xx, timeouts and refused connections retried."""

    type: Literal["fhir"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    """The server's base URL, e.g. https://ehr.example.org/fhir/R4."""
    headers: dict[str, str] = Field(default_factory=dict)
    """E.g. Authorization: Bearer ${EHR_TOKEN} (values may come from the environment)."""
    timeout: Duration = 30.0
    ca: str | None = None
    """A CA bundle to verify the server's certificate with (https)."""


class ResultsDestination(DestinationBase):
    """Put on the channel that inference announces finished studies to: assembles one AI
    result per finished model run and linked order (radbridge.engine.results) and hands
    it, as the result JSON, to `results_channel` (whose channels render the priority
    update, the ORU and the FHIR Bundle), and the DICOM SR (and a SEG where the model
    gave a heat map) to `pacs_channel`. A study not yet linked to an order waits: the
    delivery is retried until correlation (or a person) links it. What was sent is kept
    (radbridge.engine.results.ledger): new images, a cancelled order or a patient change
    later send a corrected or withdrawn revision to the same channels."""

    type: Literal["results"]
    results_channel: Name
    pacs_channel: Name | None = None
    pacs_endpoint: str | None = None
    """The PACS's DICOMweb base URL, given to the EHR in the FHIR ImagingStudy."""
    segmentation: bool = True
    """Also a DICOM SEG of the heat map for positive findings, beside the SR."""
    unlinked: Literal["hold", "study-only"] = "hold"
    """A study not linked to an order yet: `hold` its results until it is (the default),
    or send them at once as `study-only` (the patient and accession from the images'
    own header), followed by a correction with the order once the study is linked."""
    correct_on_patient_change: bool = True
    """Send a corrected result when the patient's identity it was sent with changes
    after it went out: new demographics (ADT A08, or any ADT carrying them) or a merge
    into another patient (A40)."""


class TritonServer(StrictModel):
    """Run every model of an inference destination on this Triton server, under the
    card's name (`radbridge models export-triton` writes the repository it serves)."""

    url: str = "127.0.0.1:8000"
    protocol: Literal["http", "grpc"] = "http"
    timeout: Duration = Field(default=30.0, gt=0)


class InferenceDestination(DestinationBase):
    """Runs the models that apply to each study-ready message's study and records the
    findings (radbridge.engine.inference_runs). The embedded default runs the cards'
    ONNX files in-process; `triton` sends the tensors to a Triton server instead."""

    type: Literal["inference"]
    cards: list[str] = Field(default_factory=list)
    """Folders or files of model cards; empty: the demonstration models shipped with
    Radbridge. Relative paths are relative to the data directory."""
    models: list[str] = Field(default_factory=list)
    """Which cards (NAME or NAME:VERSION) to run; empty: all of them."""
    triton: TritonServer | None = None
    parallel: int = Field(default=1, ge=1, le=64)
    """Models running at once on this node; waiting studies go STAT first."""
    memory_budget_mb: int = Field(default=2048, ge=16)
    """A series whose decoded pixels need more is a final failure, not a crash."""
    results_channel: Name | None = None
    """The internal channel that receives one message per study version when every model
    has finished (the results issue renders it to ORU, FHIR and SR)."""
    qa_strata: list[str] = Field(default_factory=list)
    """DICOM keywords (e.g. BodyPartExamined, ProtocolName) whose values each QA
    observation keeps, so that agreement and positive rates break down by them too
    (`radbridge qa agreement --by ProtocolName`)."""

    @field_validator("qa_strata")
    @classmethod
    def _dicom_keywords(cls, value: list[str]) -> list[str]:
        for keyword in value:
            if tag_for_keyword(keyword) is None:
                raise ValueError(f"qa_strata: {keyword!r} is not a DICOM keyword "
                                 "(e.g. BodyPartExamined, ProtocolName)")
        return value


class QaReportsDestination(DestinationBase):
    """Reads the radiologist's call per finding from final reports (HL7 v2 ORU^R01 with
    OBR-25 F or C, FHIR DiagnosticReport final, amended or corrected) into the QA store
    (radbridge.engine.qa), where agreement with the AI results is computed. Preliminary
    reports and other messages are accepted and ignored."""

    type: Literal["qa-reports"]
    rules: dict[str, Any] | None = None
    """How report text is read: `{findings: [{code, system?, display?, keywords?,
    uncertain_as?, not_mentioned_as?}, ...]}` (radbridge.qa.reading.rules_from_config);
    none: the rules for the shipped demonstration models' findings."""

    @field_validator("rules")
    @classmethod
    def _rules_read(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            rules_from_config(value)  # QaConfigError is a ValueError naming the field
        return value


DestinationConfig = Annotated[
    NullDestination | FileDestination | HttpDestination | ChannelDestination
    | MllpDestination | RegistryDestination | DimseDestination | StowRsDestination
    | DicomRetrieveDestination | CorrelationDestination | InferenceDestination
    | FhirDestination | ResultsDestination | QaReportsDestination,
    Field(discriminator="type"),
]


# --- sources -------------------------------------------------------------------------


class HttpSource(StrictModel):
    """Messages POSTed to /api/channels/NAME/messages on the API server."""

    type: Literal["http"]
    max_size: ByteSize = 16 * 2**20


class DirectorySource(StrictModel):
    """Files dropped in a folder; each is stored, then moved aside or deleted."""

    type: Literal["directory"]
    path: str
    pattern: str = "*"
    poll_interval: Duration = 1.0
    min_age: Duration = 1.0
    after: Literal["move", "delete"] = "move"
    move_to: str | None = None
    content_type: str = "application/octet-stream"


class ChannelSource(StrictModel):
    """Messages handed over by other channels' 'channel' destinations."""

    type: Literal["channel"]


class Hl7Acceptance(StrictModel):
    """What an HL7 v2 source accepts; anything else is NAKed (and still stored)."""

    versions: list[str] = Field(default_factory=lambda: [
        "2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8",
        "2.8.1", "2.8.2", "2.9"])
    message_types: list[str] = Field(default_factory=lambda: ["*"])
    """Patterns on MSG-1^MSG-2 such as 'ADT^*' or 'ORM^O01'; '*' means any standard type."""
    processing_ids: list[str] = Field(default_factory=lambda: ["P", "D", "T"])
    required_segments: dict[str, list[str]] = Field(default_factory=lambda: {
        "ADT": ["EVN", "PID"], "ORM": ["PID", "ORC"], "OMI": ["PID", "ORC"],
        "OMG": ["PID", "ORC"], "ORU": ["PID", "OBR"], "SIU": ["SCH"], "MDM": ["EVN", "PID"]})
    """Segments that must be present, by message type (MSH-9.1)."""
    encoding: str = "utf-8"
    """How content is decoded when MSH-18 says nothing; content that does not decode is NAKed."""


class MllpSource(StrictModel):
    """An HL7 v2 MLLP listener: one frame per message, acknowledged after commit."""

    type: Literal["mllp"]
    host: str = "127.0.0.1"
    port: int = Field(default=2575, ge=0, le=65535)
    tls: TlsConfig | None = None
    idle_timeout: Duration = 600.0
    max_message_size: ByteSize = 10 * 2**20
    max_connections: int = Field(default=256, ge=1, le=65536)
    dedup_window: Duration = 86_400.0
    """A repeated MSH-10 from the same sender within this time is acknowledged, not stored."""
    accept: Hl7Acceptance = Field(default_factory=Hl7Acceptance)
    ack_application: str = "RADBRIDGE"
    ack_facility: str = ""

    @model_validator(mode="after")
    def _tls_has_certificate(self) -> MllpSource:
        if self.tls is not None and self.tls.cert is None:
            raise ValueError("expected tls.cert and tls.key for a TLS listener")
        return self


DEFAULT_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",        # implicit VR little endian
    "1.2.840.10008.1.2.1",      # explicit VR little endian
    "1.2.840.10008.1.2.1.99",   # deflated explicit VR little endian
    "1.2.840.10008.1.2.2",      # explicit VR big endian (retired, still sent)
    "1.2.840.10008.1.2.4.50",   # JPEG baseline
    "1.2.840.10008.1.2.4.51",   # JPEG extended
    "1.2.840.10008.1.2.4.57",   # JPEG lossless
    "1.2.840.10008.1.2.4.70",   # JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.80",   # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",   # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",   # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",   # JPEG 2000
    "1.2.840.10008.1.2.5",      # RLE lossless
)
"""Transfer syntaxes a DICOM source accepts as sent (nothing is transcoded)."""


class DimseSource(StrictModel):
    """A DICOM SCP: C-ECHO, C-STORE (streamed to the blob store, indexed before success),
    MPPS (N-CREATE/N-SET) and Storage Commitment (N-ACTION)."""

    type: Literal["dimse"]
    ae_title: AeTitle = "RADBRIDGE"
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    allowed_calling_aes: list[AeTitle] = Field(default_factory=list)
    """Calling AE titles allowed to associate; empty: any."""
    tls: TlsConfig | None = None
    transfer_syntaxes: list[str] = Field(default_factory=lambda: list(DEFAULT_TRANSFER_SYNTAXES))
    max_pdu: int = Field(default=262_144, ge=0)
    """Largest PDU we accept (announced in A-ASSOCIATE-AC); 0: no limit."""
    max_associations: int = Field(default=32, ge=1, le=1024)
    idle_timeout: Duration = 60.0
    max_instance_size: ByteSize = 4 * 2**30
    commitment_peers: list[DicomPeerConfig] = Field(default_factory=list)
    """Storage Commitment requesters that want the result on a new association (many
    modalities release theirs right after N-ACTION): by AE title, where they listen.
    Others get the N-EVENT-REPORT on the association that asked."""

    @model_validator(mode="after")
    def _tls_has_certificate(self) -> DimseSource:
        if self.tls is not None and self.tls.cert is None:
            raise ValueError("expected tls.cert and tls.key for a TLS listener")
        return self


class StowRsSource(StrictModel):
    """STOW-RS on the API server: POST /dicomweb/CHANNEL/studies (multipart/related)."""

    type: Literal["stow-rs"]
    max_size: ByteSize = 4 * 2**30


class QaMonitorSource(StrictModel):
    """Checks drift of every model version every `interval` (radbridge.engine.qa.monitor)
    and receives each new alert on this channel as a JSON message, so the channel's
    destinations deliver it (a webhook, a file, the RIS); one alert per drifted measure and
    period, however often it is checked."""

    type: Literal["qa-monitor"]
    interval: Duration = Field(default=3600.0, gt=0)
    period_days: int = Field(default=30, ge=1, le=3650)
    """The current window: fixed periods of this many days of study dates."""
    baseline_days: int = Field(default=90, ge=1, le=3650)
    """The baseline: this many days before the current period."""
    bins: int = Field(default=10, ge=2, le=100)
    min_group: int = Field(default=200, ge=1)
    """Windows smaller than this raise no alert (chance alone moves PSI on few studies)."""
    psi_warn: float = Field(default=0.1, gt=0)
    psi_alert: float = Field(default=0.25, gt=0)
    ks_alpha: float = Field(default=0.01, gt=0, lt=1)


class AlertsSource(StrictModel):
    """Evaluates alert rules over the store every `interval` (radbridge.engine.alerts) and
    receives each new incident, and each resolution, on this channel as a JSON message,
    so the channel's destinations deliver it (an http destination is a webhook). One
    incident is one alert however often it is checked; resolved, then seen again, is a
    second. `channels`: which channels the rules watch (empty: every channel but this)."""

    type: Literal["alerts"]
    interval: Duration = Field(default=30.0, gt=0)
    channels: list[Name] = Field(default_factory=list)
    error_rate: ErrorRateRule = Field(default_factory=ErrorRateRule)
    queue_age: QueueAgeRule = Field(default_factory=QueueAgeRule)
    dead_letters: DeadLettersRule = Field(default_factory=DeadLettersRule)
    peer_down: PeerDownRule = Field(default_factory=PeerDownRule)
    drift: DriftRule = Field(default_factory=DriftRule)


SourceConfig = Annotated[
    HttpSource | DirectorySource | ChannelSource | MllpSource | DimseSource | StowRsSource
    | QaMonitorSource | AlertsSource,
    Field(discriminator="type"),
]


# --- the channel ---------------------------------------------------------------------


class StudyAssembly(StrictModel):
    """When a study received on a DICOM channel is complete, and where that is announced.

    Ready, in order of preference: as many series as the order's procedure expects
    (`expected_series`), an MPPS COMPLETED whose referenced instances have all arrived, a
    Storage Commitment request for instances all stored, or a quiet period (per
    modality, `default` for the rest) with no new instance.
    """

    ready_channel: Name
    """The internal channel (source type 'channel') that receives study-ready messages."""
    quiet_period: dict[str, Duration] = Field(default_factory=lambda: {"default": 30.0})
    mpps: bool = True
    """Wait for an MPPS in progress to complete instead of the quiet period."""
    mpps_timeout: Duration = 3600.0
    """How long after the last instance an MPPS still in progress is waited for, before the
    quiet period decides after all (modalities that never complete their steps exist)."""
    expected_series: dict[str, int] = Field(default_factory=dict)
    """Procedure code (the order's, OBR-4.1) -> how many series that exam makes: a study
    whose order(s) say so is ready as soon as that many series have arrived."""

    @field_validator("expected_series")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        for code, count in value.items():
            if count < 1:
                raise ValueError(f"expected_series[{code!r}]: expected at least 1, got {count}")
        return value

    @field_validator("quiet_period")
    @classmethod
    def _has_default(cls, value: dict[str, Duration]) -> dict[str, Duration]:
        if "default" not in value:
            raise ValueError("expected a 'default' entry (seconds for any other modality)")
        return value


class ChannelConfig(StrictModel):
    """One channel: a source, an optional filter, transformers, and its destinations."""

    name: Name
    description: str = ""
    enabled: bool = True
    source: SourceConfig
    filter: FilterConfig | None = None
    transformers: list[TransformerConfig] = Field(default_factory=list)
    destinations: list[DestinationConfig] = Field(min_length=1)
    assembly: StudyAssembly | None = None
    """Study assembly, for channels whose source receives DICOM instances."""

    @field_validator("destinations", mode="before")
    @classmethod
    def _bare_null_type(cls, value: Any) -> Any:
        """YAML reads `type: null` as no value; it can only mean the null destination."""
        if isinstance(value, list):
            return [
                {**item, "type": "null"} if isinstance(item, dict) and "type" in item
                and item["type"] is None else item
                for item in value
            ]
        return value

    @field_validator("destinations")
    @classmethod
    def _unique_destination_names(
        cls, value: list[DestinationBase]
    ) -> list[DestinationBase]:
        seen: set[str] = set()
        for destination in value:
            if destination.name in seen:
                raise ValueError(f"destination name {destination.name!r} is used twice")
            seen.add(destination.name)
        return value

    def destination(self, name: str) -> DestinationBase:
        """The destination called `name` (KeyError when there is none)."""
        for destination in self.destinations:
            if destination.name == name:
                return destination
        raise KeyError(name)
