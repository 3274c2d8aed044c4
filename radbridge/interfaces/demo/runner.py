"""One demonstration case through a running engine, with the timings of each step.

`send_orders` and `send_study` are the two clients a hospital would run (the HIS over
MLLP, the CT scanner over C-STORE); `follow` then watches the engine's API and its
outputs until every output the model's answer calls for has left, and records when:
a file output by its mtime, a delivery to a real peer by its `sent_at`. Times are
measured from the study's `ready_at` (study-ready) and from the inference run's
`updated_at` (the model's answer), both read back from the API.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pydicom

from radbridge.engine.config import DicomPeerConfig
from radbridge.errors import RadbridgeError
from radbridge.interfaces.demo.channels import DICOM_AE, Endpoints, Ports
from radbridge.interfaces.demo.engine import Engine
from radbridge.interfaces.demo.messages import DemoCase, adt_a04, orm_o01
from radbridge.interfaces.demo.study import head_ct, write_study
from radbridge.interfaces.dimse.scu import DicomClient
from radbridge.interfaces.dimse.store_destination import StoreClient, read_meta
from radbridge.interfaces.mllp.sender import MllpConnection, read_msa

ACK_TIMEOUT = 30.0
POLL = 0.1


class DemoError(RadbridgeError):
    """A step of the demo failed (a NAK, a refused C-STORE, a timeout)."""


class Progress(Protocol):
    """Where the runner reports what it did; the CLI shows it, the benchmark may not."""

    def done(self, text: str) -> None: ...

    def waiting(self, text: str) -> None: ...


class Silent:
    def done(self, text: str) -> None:
        pass

    def waiting(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class OutputSpec:
    """One output of the flow: its channel and destination, its outbox folder and files."""

    kind: str
    label: str
    channel: str
    folder: str
    pattern: str
    modality: str | None = None


OUTPUTS = (
    OutputSpec("priority", "RIS worklist priority update", "ris-priority", "ris",
               "priority-*.hl7"),
    OutputSpec("oru", "RIS ORU^R01 report", "ris-oru", "ris", "oru-*.hl7"),
    OutputSpec("bundle", "EHR FHIR Bundle", "ehr-fhir", "ehr", "bundle-*.json"),
    OutputSpec("sr", "PACS DICOM SR", "pacs-out", "pacs", "*.dcm", "SR"),
    OutputSpec("seg", "PACS DICOM SEG", "pacs-out", "pacs", "*.dcm", "SEG"),
)
DESTINATION = "ris", "ehr", "pacs"
"""The destination names of the shipped output channels (each has one)."""


@dataclass
class OutputSeen:
    kind: str
    label: str
    where: str
    """The file's path, or the peer it was delivered to."""
    at: float
    """Epoch seconds: the file's mtime, or the delivery's sent_at."""
    from_ready: float | None = None
    from_answer: float | None = None


@dataclass
class CaseResult:
    case: DemoCase
    slices: int
    positive: bool
    """What the study was made with (the truth), not what the model said."""
    steps: dict[str, float] = field(default_factory=dict)
    """Seconds each client step took (adt_ack, orm_ack, study_sent)."""
    instances: int = 0
    ready_at: float | None = None
    answer_at: float | None = None
    linked: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, OutputSeen] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)
    problem: str | None = None
    audit: list[dict[str, Any]] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [kind for kind in self.expected if kind not in self.outputs]

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.missing and bool(self.expected)


# --- the clients --------------------------------------------------------------------


def send_orders(port: int, case: DemoCase, progress: Progress) -> dict[str, float]:
    """ADT^A04 then ORM^O01 over one MLLP connection, each waiting for its AA."""
    now = datetime.now(UTC)
    messages = [("ADT^A04", adt_a04(case, now)), ("ORM^O01 NW", orm_o01(case, now))]
    return asyncio.run(_send_hl7("127.0.0.1", port, messages, progress))


async def _send_hl7(host: str, port: int, messages: list[tuple[str, str]],
                    progress: Progress) -> dict[str, float]:
    try:
        connection = await MllpConnection.open(host, port, tls=None, timeout=ACK_TIMEOUT,
                                               max_size=2**20)
    except (OSError, TimeoutError) as exc:
        raise DemoError(f"cannot connect to the HL7 listener {host}:{port}: {exc}") from exc
    took: dict[str, float] = {}
    try:
        for label, text in messages:
            began = time.monotonic()
            progress.waiting(f"sending {label} over MLLP")
            await connection.send(text.encode())
            try:
                ack = await asyncio.wait_for(connection.receive(), ACK_TIMEOUT)
            except (TimeoutError, ConnectionError) as exc:
                raise DemoError(f"{label}: no ACK from {host}:{port} "
                                f"({type(exc).__name__})") from exc
            code, _, reason = read_msa(ack)
            if code not in ("AA", "CA"):
                raise DemoError(f"{label}: the engine answered {code} {reason}".rstrip())
            took[label] = time.monotonic() - began
            progress.done(f"{label} acknowledged ({code}, {took[label] * 1000:.0f} ms)")
    finally:
        connection.close()
    return took


def send_study(port: int, case: DemoCase, *, slices: int, positive: bool, matrix: int,
               workdir: Path, progress: Progress) -> tuple[int, float]:
    """Generate the case's head CT and C-STORE it; (instances, seconds sending took)."""
    progress.waiting(f"generating a {slices}-slice head CT "
                     f"({'with' if positive else 'without'} a haemorrhage)")
    folder = workdir / f"study-{case.token}"
    paths = write_study(head_ct(case, slices=slices, positive=positive, matrix=matrix),
                        folder)
    try:
        peer = DicomPeerConfig(ae_title=DICOM_AE, host="127.0.0.1", port=port,
                               calling_ae="DEMO_CT")
        store = StoreClient(DicomClient(peer))
        store.prepare(read_meta(path) for path in paths[:1])
        progress.waiting(f"sending {len(paths)} instances over C-STORE to {DICOM_AE}")
        began = time.monotonic()
        try:
            for path in paths:
                outcome = store.store(path)
                if outcome.status != 0x0000:
                    raise DemoError(f"C-STORE of {path.name} answered 0x{outcome.status:04X}")
        finally:
            store.close()
        took = time.monotonic() - began
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    progress.done(f"study sent: {len(paths)} instances in {took:.1f} s")
    return len(paths), took


# --- watching the engine ------------------------------------------------------------


def epoch(text: str | None) -> float | None:
    """An API time (ISO 8601; naive means UTC) as epoch seconds."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class OutputWatch:
    """Finds the case's outputs: new files in the outbox folders, or sent deliveries."""

    def __init__(self, engine: Engine, endpoints: Endpoints) -> None:
        self.engine, self.endpoints = engine, endpoints
        self.outbox = engine.data_dir / "outbox"
        self.before = set(self._files())
        self._checked: dict[Path, bool] = {}
        self._modality: dict[Path, str] = {}

    def _files(self) -> Iterable[Path]:
        for folder in {spec.folder for spec in OUTPUTS}:
            if (self.outbox / folder).is_dir():
                yield from (self.outbox / folder).iterdir()

    def _peer(self, spec: OutputSpec) -> str | None:
        endpoints = self.endpoints
        if spec.channel in ("ris-priority", "ris-oru") and endpoints.ris:
            return "mllp://{}:{}".format(*endpoints.ris)
        if spec.channel == "ehr-fhir" and endpoints.ehr:
            return endpoints.ehr
        if spec.channel == "pacs-out" and endpoints.pacs:
            return "dimse://{}@{}:{}".format(*endpoints.pacs)
        return None

    def find(self, case: DemoCase, kinds: Iterable[str]) -> dict[str, OutputSeen]:
        found: dict[str, OutputSeen] = {}
        wanted = [spec for spec in OUTPUTS if spec.kind in kinds]
        if any(self._peer(spec) is None for spec in wanted):
            found.update(self._find_files(case, [s for s in wanted if self._peer(s) is None]))
        for spec in wanted:
            peer = self._peer(spec)
            if peer is not None and (seen := self._find_sent(case, spec, peer)):
                found[spec.kind] = seen
        return found

    def _find_files(self, case: DemoCase, specs: list[OutputSpec]) -> dict[str, OutputSeen]:
        found: dict[str, OutputSeen] = {}
        for spec in specs:
            for path in sorted((self.outbox / spec.folder).glob(spec.pattern)):
                if path in self.before or not self._belongs(path, case):
                    continue
                if spec.modality is None or self._modality.get(path) == spec.modality:
                    found[spec.kind] = OutputSeen(spec.kind, spec.label, str(path),
                                                  path.stat().st_mtime)
        return found

    def _belongs(self, path: Path, case: DemoCase) -> bool:
        """Whether an output file is about this case (read once per file): a DICOM object
        by its Study Instance UID, a text by the case's accession or study UID in it."""
        if path not in self._checked:
            if path.suffix == ".dcm":
                dataset = pydicom.dcmread(path, stop_before_pixels=True,
                                          specific_tags=["StudyInstanceUID", "Modality"])
                self._modality[path] = str(dataset.Modality)
                self._checked[path] = str(dataset.StudyInstanceUID) == case.study_uid
            else:
                text = path.read_text(errors="replace")
                self._checked[path] = case.accession in text or case.study_uid in text
        return self._checked[path]

    def _find_sent(self, case: DemoCase, spec: OutputSpec, peer: str) -> OutputSeen | None:
        rows = self.engine.get("/api/messages", {"channel": spec.channel, "limit": 100})
        for row in rows["messages"]:
            if case.study_uid != row.get("study_uid") and case.accession != row.get("accession"):
                continue
            if "sent" not in row["deliveries"].get(_destination(spec), {}):
                continue
            detail = self.engine.get(f"/api/messages/{row['id']}")
            if spec.modality is not None and _modality_of(detail) not in (spec.modality, None):
                continue
            sent = [epoch(d["sent_at"]) for d in detail["deliveries"] if d["status"] == "sent"]
            if sent and sent[0] is not None:
                return OutputSeen(spec.kind, spec.label, peer, sent[0])
        return None


def _destination(spec: OutputSpec) -> str:
    return {"ris": "ris", "ehr": "ehr", "pacs": "pacs"}[spec.folder]


def _modality_of(detail: dict[str, Any]) -> str | None:
    """SR or SEG, from the `kind` the results destination puts in a pacs-out message."""
    kind = (detail.get("metadata") or {}).get("kind")
    return None if kind is None else str(kind).upper()


def follow(engine: Engine, watch: OutputWatch, case: DemoCase, result: CaseResult,
           timeout: float, progress: Progress) -> None:
    """Poll until every expected output has left, or the deadline (result.problem)."""
    deadline = time.monotonic() + timeout
    announced: set[str] = set()

    def once(key: str, text: str | Callable[[], str]) -> None:
        if key not in announced:
            announced.add(key)
            progress.done(text() if callable(text) else text)

    progress.waiting("waiting for the study to be complete (quiet period)")
    while time.monotonic() < deadline:
        engine.check_alive()
        study = engine.get(f"/api/studies/{case.study_uid}", missing_ok=True)
        if study is not None and study.get("ready_at"):
            result.ready_at = epoch(study["ready_at"])
            once("ready", f"study ready ({study.get('ready_reason')}, "
                          f"{study.get('instance_count')} instances)")
            progress.waiting("waiting for correlation and the model")
        if study is not None and study.get("orders"):
            result.linked = study["orders"]
            once("linked", lambda: f"linked to the order of accession {case.accession} ("
                 + ", ".join(f"rule {o.get('rule')}, confidence {o.get('confidence')}"
                             for o in result.linked) + ")")
        if study is not None and study.get("inference") and not result.runs \
                and _inference_done(engine, case):
            # read again after the announcement: the runs read before it may lack the
            # last model's (each is recorded as it finishes)
            study = engine.get(f"/api/studies/{case.study_uid}")
            runs = [r for r in study.get("inference", [])
                    if r.get("study_version") == study.get("ready_version")]
            if not runs:
                time.sleep(POLL)
                continue
            result.runs = runs
            result.answer_at = max(epoch(run["updated_at"]) or 0.0 for run in runs)
            once("answered", lambda: "inference done: " + "; ".join(map(_run_line, result.runs)))
            result.expected = expected_outputs(runs)
            if not result.expected:
                result.problem = "no model gave an answer: " + "; ".join(map(_run_line, runs))
                return
        if result.expected:
            progress.waiting("waiting for the outputs: " + ", ".join(result.missing))
            for kind, seen in watch.find(case, result.missing).items():
                result.outputs[kind] = seen
                _place(seen, result)
                once(kind, f"{seen.label} left: {seen.where}")
            if not result.missing:
                return
        time.sleep(POLL)
    result.problem = _timeout_problem(result, timeout)


def _inference_done(engine: Engine, case: DemoCase) -> bool:
    """Whether every model has settled on the study: inference-done announced it (runs
    appear one by one, so settled rows alone could be an early subset)."""
    rows = engine.get("/api/messages", {"channel": "inference-done", "limit": 50})["messages"]
    return any(row.get("study_uid") == case.study_uid for row in rows)


def _place(seen: OutputSeen, result: CaseResult) -> None:
    if result.ready_at is not None:
        seen.from_ready = seen.at - result.ready_at
    if result.answer_at is not None:
        seen.from_answer = seen.at - result.answer_at


def _timeout_problem(result: CaseResult, timeout: float) -> str:
    if result.ready_at is None:
        return f"the study was not ready within {timeout:.0f} s"
    if not result.runs:
        return f"the model had not answered within {timeout:.0f} s"
    if not result.linked:
        return f"the study was not linked to its order within {timeout:.0f} s"
    return f"outputs missing after {timeout:.0f} s: {', '.join(result.missing)}"


def expected_outputs(runs: list[dict[str, Any]]) -> list[str]:
    """What the model's answer calls for: an ORU, a Bundle and an SR per answered run; a
    priority update for an emergent positive, a SEG for a positive (its heat map)."""
    answered = [run for run in runs if run["status"] == "done"]
    if not answered:
        return []
    kinds = ["oru", "bundle", "sr"]
    if any(run.get("positive") for run in answered):
        kinds.append("seg")
    if any(run.get("positive") and run.get("emergent") for run in answered):
        kinds.insert(0, "priority")
    return kinds


def _run_line(run: dict[str, Any]) -> str:
    if run["status"] != "done":
        return f"{run['model_name']} {run['status']} ({run.get('reason')})"
    best = max(run.get("findings") or [{}], key=lambda f: f.get("probability", 0.0))
    answer = "positive" if run.get("positive") else "negative"
    return (f"{run['model_name']} {run['model_version']}: {answer}, "
            f"p={best.get('probability', 0.0):.3f}")


AUDIT_PAGES = 50


def audit_trail(engine: Engine, case: DemoCase) -> list[dict[str, Any]]:
    """The patient's audit events, oldest first, identifiers only (no detail, no names).

    Events of one kind (action, actor, outcome, channel) are one entry, at the first
    one's place, with a count and the last one's time: a 300-slice study is 900
    per-instance events that say the same thing."""
    events: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"patient_id": case.patient_id, "limit": 1000}
    for _ in range(AUDIT_PAGES):
        page = engine.get("/api/audit", params)
        events += page["events"]
        if page.get("next_before_seq") is None:
            break
        params["before_seq"] = page["next_before_seq"]
    trail: dict[tuple[str, ...], dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: e["seq"]):
        actor = str(event.get("actor"))
        actor = actor.rsplit(":", 1)[0] if actor.startswith("source:") else actor
        kind = (str(event["action"]), actor, str(event.get("outcome")),
                str(event.get("channel") or ""))
        entry = trail.setdefault(kind, {
            "at": event["at"], "action": kind[0], "actor": actor, "outcome": kind[2],
            "channel": event.get("channel"), "count": 0, "accession": event.get("accession"),
            "study_uid": event.get("study_uid")})
        entry["count"] += 1
        entry["last_at"] = event["at"]
    return list(trail.values())


def run_case(engine: Engine, ports: Ports, endpoints: Endpoints, case: DemoCase, *,
             slices: int, positive: bool, matrix: int = 128, timeout: float = 180.0,
             progress: Progress | None = None) -> CaseResult:
    """The whole case: orders, study, then every output; never raises for a late output
    (the result says what is missing), raises DemoError when a client step fails."""
    progress = progress or Silent()
    result = CaseResult(case, slices, positive)
    watch = OutputWatch(engine, endpoints)
    result.steps.update(send_orders(ports.hl7, case, progress))
    result.instances, result.steps["C-STORE"] = send_study(
        ports.dicom, case, slices=slices, positive=positive, matrix=matrix,
        workdir=engine.data_dir.parent, progress=progress)
    follow(engine, watch, case, result, timeout, progress)
    result.audit = audit_trail(engine, case)
    return result
