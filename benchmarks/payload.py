"""The benchmark's message: one synthetic HL7 v2.5.1 ADT^A01 (admit), 406 bytes.

Every value is invented: the patient "BENCH^SYNTHETIC" with MRN BENCH000001, a
made-up facility and address, no real person. Segments are joined by CR as on the wire
(MLLP framing is not part of it: the benchmark has no network source).
"""

from __future__ import annotations

SEGMENTS = (
    # MSH: sender RADBENCH/BENCHFAC to RIS/BENCHFAC, ADT^A01, control id, v2.5.1
    "MSH|^~\\&|RADBENCH|BENCHFAC|RIS|BENCHFAC|20250101120000||ADT^A01^ADT_A01|"
    "MSG000000001|P|2.5.1",
    # EVN: admit event recorded at the same time, by a synthetic operator
    "EVN|A01|20250101120000|||OP0001^OPERATOR^BENCH",
    # PID: synthetic patient, MRN BENCH000001, invented address and account number
    "PID|1||BENCH000001^^^BENCHFAC^MR||SYNTHETIC^BENCH^A||19700101|U|||"
    "1 EXAMPLE ST^^TESTTOWN^TS^00000^XX|||||||ACCT00000001",
    # PV1: inpatient in a synthetic ward and bed, attending doctor invented
    "PV1|1|I|WARD1^101^A^BENCHFAC||||DOC0001^PHYSICIAN^TEST^^^DR|||MED||||1|||"
    "DOC0001^PHYSICIAN^TEST^^^DR|IN|VIS0000001",
    # AL1: no known allergies
    "AL1|1||^NKA^No Known Allergies",
)

ADT_A01: bytes = "\r".join(SEGMENTS).encode("ascii") + b"\r"
"""The payload every producer sends (406 bytes; `python -m benchmarks.payload` prints it)."""

CONTENT_TYPE = "application/hl7-v2"

if __name__ == "__main__":
    print(ADT_A01.replace(b"\r", b"\n").decode())
    print(f"{len(ADT_A01)} bytes")
