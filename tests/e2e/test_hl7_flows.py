"""The shipped HL7 channels in a real `radbridge run`, fed from outside the process.

1. The sample ADT and order story goes in over MLLP through `radbridge send hl7` (and
   one message through python-hl7's `mllp_send`): every message is ACKed AA, the
   registry holds the patient (merged into the surviving record), the encounter, the
   orders with their status history, and the audit ledger records each change.
2. AI result documents POSTed to the example `external-results` channel reach a listening RIS
   (python-hl7's server) as ORU^R01 for each result and one worklist-priority update
   (ORM^O01 XO, STAT) for the result with an emergent finding.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import hl7
import pytest

from radbridge.channels import DEFAULT_DIR, EXAMPLES_DIR
from radbridge.engine.db import Database
from radbridge.engine.registry import queries
from tests.e2e.conftest import Spawn, assert_audit_verifies, free_port, wait_until
from tests.hl7_support import audit_events
from tests.ris_listener import TestRis

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
STORY = ["adt_a04_register", "orm_o01_nw", "orm_o01_xo", "orm_o01_sc", "adt_a01_admit",
         "adt_a40_merge", "omi_o23_nw", "adt_a02_transfer", "adt_a08_update", "orm_o01_dc",
         "adt_a03_discharge"]


SURVIVOR = ("MRN100234", "NORTHWIND")
"""PID-3 (type MR) of the A40's surviving patient; MRG-1 names the one merged into it."""
MERGED = ("MRN100999", "NORTHWIND")


def shipped_channels(hl7_port: int, ris_port: int) -> str:
    """The default hl7-in channel and the external-results example, ports filled in."""
    text = (DEFAULT_DIR / "hl7-in.yaml").read_text().replace(
        "${RADBRIDGE_HL7_PORT:-2575}", str(hl7_port))
    example = (EXAMPLES_DIR / "ai-results-to-ris.yaml").read_text().replace(
        "${RIS_PORT:-2576}", str(ris_port))
    return text + "\n---\n" + example


def send_with_cli(port: int, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radbridge", "send", "hl7", *map(str, files),
         "--to", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)


def test_adt_and_orders_keep_the_registry_and_results_reach_the_ris(
        spawn: Spawn, database_url: str) -> None:
    hl7_port = free_port()
    with TestRis("AA") as ris:
        node = spawn(channel_yaml=shipped_channels(hl7_port, ris.port),
                     database_url=database_url, node_id="flows").start()

        first, *rest = [SAMPLES / "hl7" / f"{name}.hl7" for name in STORY]
        mllp_send = shutil.which("mllp_send", path=str(Path(sys.executable).parent))
        assert mllp_send is not None
        sent = subprocess.run([mllp_send, "--loose", "--port", str(hl7_port), "--file",
                               str(first), "127.0.0.1"], capture_output=True, text=True,
                              timeout=30)
        assert sent.returncode == 0 and "MSA|AA|" in sent.stdout.replace("\r", "\n")
        result = send_with_cli(hl7_port, rest)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count(": AA") == len(rest)

        bad = node.data_dir / "bad.hl7"
        bad.write_text((SAMPLES / "hl7" / "adt_a08_update.hl7").read_text()
                       .replace("|2.5.1", "|9.9", 1))
        refused = send_with_cli(hl7_port, [bad])
        assert refused.returncode == 1 and ": AR" in refused.stdout and "9.9" in refused.stdout

        database = Database(database_url)
        try:
            wait_until(lambda: _discharged(database), 30, "the story up to the discharge")
            with database.read() as session:
                patient = queries.patient_by_identifier(session, *SURVIVOR)
                assert patient is not None and patient.merged_into_id is None
                # Looking up the merged identifier finds the survivor (merges are followed).
                found_by_old_id = queries.patient_by_identifier(session, *MERGED)
                merged = queries.merged_patients(session, patient.id)
                orders = queries.patient_orders(session, patient.id)
                history = [queries.order_history(session, order.id) for order in orders]
            assert found_by_old_id is not None and found_by_old_id.id == patient.id
            assert [(m.identifier, m.issuer) for m in merged] == [MERGED]
            assert len(orders) >= 2  # the merge re-pointed the unidentified patient's order
            assert {o.status for o in orders} >= {"discontinued"}
            assert any(len(h) >= 3 for h in history)  # NW, XO, SC/DC kept as history
            actions = {e.action for e in audit_events(database, "registry.order.created")}
            assert actions == {"registry.order.created"}
            assert audit_events(database, "registry.patient.merged")
            assert audit_events(database, "message.rejected")
        finally:
            database.dispose()

        for name in ("ich-positive-demo", "ich-negative"):
            response = node.post((SAMPLES / "results" / f"{name}.json").read_bytes(),
                                 channel="external-results")
            assert response.status_code == 202, response.text
        wait_until(lambda: len(ris.received) >= 3, 30, "two ORUs and one priority update")
        messages = [hl7.parse(text) for text in ris.received]
        types = sorted(str(m.segment("MSH")(9)) for m in messages)
        assert types == ["ORM^O01^ORM_O01", "ORU^R01^ORU_R01", "ORU^R01^ORU_R01"]
        bump = next(m for m in messages if str(m.segment("MSH")(9)).startswith("ORM"))
        assert str(bump.segment("ORC")(1)) == "XO"
        assert str(bump.segment("ORC")(7)).split("^")[5] == "S"
        positive = json.loads((SAMPLES / "results" / "ich-positive-demo.json").read_text())
        assert positive["order"]["accession"] in str(bump)
        node.stop_gracefully()
        assert_audit_verifies(node)


def _discharged(database: Database) -> bool:
    with database.read() as session:
        patient = queries.patient_by_identifier(session, *SURVIVOR)
        if patient is None:
            return False
        return any(e.status == "discharged" for e in queries.patient_encounters(session,
                                                                                patient.id))
