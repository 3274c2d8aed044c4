"""Changes after the results went out, end to end in a real `radbridge run` against real
peers: the test RIS over MLLP, Medplum's FHIR engine (validation on) and Orthanc over
C-STORE. An ordered head CT gets its AI result everywhere; then an A08 renames the
patient (the RIS gets a corrected ORU, OBR-25 C, with the new name; the EHR's report is
replaced in place); then the order is cancelled (the RIS gets OBR-25 X with OBX-11 D,
the EHR's report becomes entered-in-error, the PACS gets an IOCM rejection note listing
the SR and SEG). The audit trail has each revision."""

from __future__ import annotations

import json
from pathlib import Path

import hl7
import pytest
import yaml

from radbridge.interfaces.demo.channels import Endpoints, Ports, channel_documents
from tests.e2e.conftest import Spawn, wait_until
from tests.e2e.test_correlation_flows import ORDERED_STUDY, send_hl7
from tests.e2e.test_results_flow import send_ordered_head_ct
from tests.ris_listener import TestRis

pytestmark = pytest.mark.slow

ACCESSION = "ACC26120001"
AIMED = {"HC998877^^^ONTARIO-HC^HC~MRN100234": "MRN100999"}
CANCEL = {**AIMED, "PLC5002": "PLC5001", "FIL9002": "FIL9001", "ACC26120002": ACCESSION}


def orus(ris: TestRis) -> list[hl7.Message]:
    return [message for message in (hl7.parse(text) for text in list(ris.received))
            if str(message.segment("MSH")(9)).startswith("ORU")]


def result_status(message: hl7.Message) -> str:
    return str(message.segment("OBR")(25))


def test_an_update_corrects_and_a_cancel_withdraws_the_result_everywhere(
        spawn: Spawn, tmp_path: Path, fhir_server, orthanc) -> None:
    fhir_server.reset()
    orthanc.clear()
    identifier = None
    with TestRis() as ris:
        ports = Ports.free()
        documents = channel_documents(ports, Endpoints(
            ris=("127.0.0.1", ris.port), ehr=fhir_server.base_url,
            pacs=(orthanc.ae_title, "127.0.0.1", orthanc.dicom_port)), quiet_period=1.0)
        node = spawn(channel_yaml="\n---\n".join(yaml.safe_dump(d) for d in documents.values()),
                     database_url=f"sqlite:///{tmp_path / 'store.db'}",
                     node_id="changes").start()
        send_hl7(ports.hl7, "adt_a04_register", "orm_o01_nw", tmp=tmp_path)
        send_ordered_head_ct(ports.dicom, tmp_path / "study")

        def report() -> dict | None:
            found = fhir_server.search("DiagnosticReport")
            return found[0] if found else None

        wait_until(lambda: orus(ris) and report(), 120, "the first ORU and report")
        [first] = orus(ris)
        assert result_status(first) == "P"
        assert str(first.segment("PID")(5)).startswith("TRAUMA^ZULU")
        identifier = report()["identifier"][0]["value"]  # type: ignore[index]
        wait_until(lambda: len(orthanc.instances()) == 2, 60, "the SR and SEG in the PACS")

        send_hl7(ports.hl7, "adt_a08_update", tmp=tmp_path, **AIMED)
        wait_until(lambda: len(orus(ris)) >= 2, 60, "the corrected ORU")
        corrected = orus(ris)[1]
        assert result_status(corrected) == "C"
        assert str(corrected.segment("PID")(5)).startswith("MORGAN-LÓPEZ^ALEXIS")
        assert str(corrected.segment("OBR")(18)) == ACCESSION
        wait_until(lambda: report()["conclusion"].startswith("CORRECTED"), 30,  # type: ignore[index]
                   "the EHR's report replaced")

        send_hl7(ports.hl7, "orm_o01_ca", tmp=tmp_path, **CANCEL)
        wait_until(lambda: len(orus(ris)) >= 3, 60, "the withdrawing ORU")
        withdrawn = orus(ris)[2]
        assert result_status(withdrawn) == "X"
        assert {str(obx(11)) for obx in withdrawn.segments("OBX")} == {"D"}
        wait_until(lambda: report()["status"] == "entered-in-error", 30,  # type: ignore[index]
                   "the EHR's report entered-in-error")
        wait_until(lambda: kos_in(orthanc), 60, "the rejection note in the PACS")
        assert len(orthanc.instances()) == 3  # the A08 sent nothing new to the PACS
        received = list(ris.received)
    # the STAT update again with the (still emergent) correction, none for the withdrawal
    assert [str(hl7.parse(t).segment("MSH")(9)).split("^")[0] for t in received].count(
        "ORM") == 2
    [only] = fhir_server.search("DiagnosticReport")
    assert only["identifier"][0]["value"] == identifier  # replaced, never duplicated
    trail = node.cli("audit", "query", "--patient-id", "MRN100999", "--limit", "500")
    actions = [event["action"] for event in json.loads(trail.stdout)["events"]]
    assert actions.count("result.corrected") == 1 and actions.count("result.withdrawn") == 1


def kos_in(orthanc) -> bool:
    found = orthanc.http.get(f"/dicom-web/studies/{ORDERED_STUDY}/series",
                             params={"Modality": "KO"})
    return found.status_code == 200 and bool(found.json())
