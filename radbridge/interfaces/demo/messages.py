"""The HL7 v2.5.1 messages of one demonstration case: ADT^A04 (register) and ORM^O01 NW.

Built in code (the repository's samples/ are not installed with the package). The order
carries what correlation needs to link the study without a person: the accession in
OBR-18 and the Study Instance UID the RIS assigned in a ZDS segment.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from pydicom.uid import generate_uid

SENDER = ("DEMO_EHR", "DEMO")
PROCEDURE = "CTHEADWO^CT HEAD W/O CONTRAST^DEMORAD"
DOCTOR = "4455^DEMO^ORDERING^^^DR"


@dataclass(frozen=True)
class DemoCase:
    """Who and what one demo run is about; every identifier is new for each run, so that
    runs in one data directory never collide (MSH-10 dedup, accession, study versions)."""

    token: str
    patient_id: str
    issuer: str
    patient_name: str
    sex: str
    birth_date: str
    accession: str
    study_uid: str
    placer: str
    filler: str
    visit: str
    stat: bool

    @classmethod
    def new(cls, *, stat: bool = True, token: str | None = None) -> DemoCase:
        token = token or secrets.token_hex(4).upper()
        number = int(token, 16) % 10**8
        return cls(token=token, patient_id=f"DEMO{number:08d}", issuer="DEMO",
                   patient_name="DEMO^SYNTHETIC", sex="U", birth_date="19700101",
                   accession=f"DACC{number:08d}",
                   study_uid=str(generate_uid(entropy_srcs=["radbridge-demo", token])),
                   placer=f"PLC{number:08d}", filler=f"FIL{number:08d}",
                   visit=f"V{number:08d}", stat=stat)


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its non-empty fields by number (MSH counts MSH-1 as the bar)."""
    last = max(fields)
    values = [fields.get(index, "") for index in range(1, last + 1)]
    if name == "MSH":
        return "MSH|" + "|".join(values[1:])
    return "|".join([name, *values])


def _timestamp(at: datetime) -> str:
    return at.astimezone().strftime("%Y%m%d%H%M%S%z")


def _msh(case: DemoCase, kind: str, control_id: str, at: datetime, receiver: str) -> str:
    return _segment("MSH", {1: "|", 2: "^~\\&", 3: SENDER[0], 4: SENDER[1], 5: receiver,
                            6: SENDER[1], 7: _timestamp(at), 9: kind, 10: control_id,
                            11: "P", 12: "2.5.1"})


def _pid(case: DemoCase) -> str:
    return _segment("PID", {1: "1", 3: f"{case.patient_id}^^^{case.issuer}^MR",
                            5: case.patient_name, 7: case.birth_date, 8: case.sex})


def _pv1(case: DemoCase, at: datetime) -> str:
    return _segment("PV1", {1: "1", 2: "E", 3: f"ED^BAY1^1^{case.issuer}", 7: DOCTOR,
                            17: DOCTOR, 19: f"{case.visit}^^^{case.issuer}^VN",
                            44: _timestamp(at)})


def adt_a04(case: DemoCase, at: datetime) -> str:
    """Register the patient in the emergency department (segments ended by CR)."""
    segments = [_msh(case, "ADT^A04^ADT_A01", f"DEMO-ADT-{case.token}", at, "RADBRIDGE"),
                _segment("EVN", {1: "A04", 2: _timestamp(at)}), _pid(case), _pv1(case, at)]
    return "\r".join(segments) + "\r"


def orm_o01(case: DemoCase, at: datetime) -> str:
    """A new order (NW) for a head CT, STAT or routine, with its Study Instance UID."""
    priority = "S" if case.stat else "R"
    when = _timestamp(at)
    placer, filler = f"{case.placer}^{SENDER[0]}", f"{case.filler}^DEMO_RIS"
    segments = [
        _msh(case, "ORM^O01^ORM_O01", f"DEMO-ORM-{case.token}", at, "DEMO_RIS"),
        _pid(case), _pv1(case, at),
        _segment("ORC", {1: "NW", 2: placer, 3: filler, 5: "SC", 7: f"^^^{when}^^{priority}",
                         9: when, 12: DOCTOR}),
        _segment("OBR", {1: "1", 2: placer, 3: filler, 4: PROCEDURE, 5: priority, 16: DOCTOR,
                         18: case.accession, 24: "CT", 36: when}),
        _segment("ZDS", {1: f"{case.study_uid}^DEMO_RIS^Application^DICOM"}),
    ]
    return "\r".join(segments) + "\r"
