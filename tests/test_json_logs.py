"""`radbridge run --log-format json`: one JSON object per line with time, level, logger,
message and node; HL7 and DICOM traffic carrying names, MRNs and birth dates (accepted,
refused, applied to the registry, and a message whose transformer fails) leaves none of
them in the log, even at DEBUG."""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

from pynetdicom import AE

from radbridge.interfaces.cli.json_logs import JsonFormatter
from tests.dicom_data import make_ct_series
from tests.e2e.conftest import RadbridgeNode, free_port, wait_until
from tests.hl7_support import adt_a01, frame, msa, read_frames

NAME, MRN, BIRTH = "ZEBRAFISH^QUENTIN^Q", "MRN-PHI-7731", "19610203"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_a_record_is_one_json_line_with_ids_and_no_exception_text() -> None:
    formatter = JsonFormatter("node-7")
    record = logging.LogRecord("radbridge.engine.processor", logging.ERROR, __file__, 1,
                               "processing message %s failed", (42,), None)
    record.channel = "hl7-in"
    record.delivery_id = 9
    line = json.loads(formatter.format(record))
    assert {k: line[k] for k in ("level", "logger", "message", "node", "channel",
                                 "delivery_id")} == {
        "level": "ERROR", "logger": "radbridge.engine.processor",
        "message": "processing message 42 failed", "node": "node-7", "channel": "hl7-in",
        "delivery_id": 9}
    assert line["time"].endswith("Z") and "T" in line["time"]
    try:
        raise ValueError(f"cannot map PID|1||{MRN}||{NAME}")
    except ValueError:
        record = logging.LogRecord("radbridge", logging.DEBUG, __file__, 1, "traceback of "
                                   "message %s", (42,), sys.exc_info())
    text = formatter.format(record)
    assert "\n" not in text
    failed = json.loads(text)
    assert failed["exception"] == "ValueError"
    assert "test_a_record_is_one_json_line" in failed["stack"]
    assert MRN not in text and "ZEBRAFISH" not in text


CHANNELS = """\
name: hl7
source: {{type: mllp, port: {hl7}}}
destinations: [{{name: registry, type: registry}}]
---
name: images
source: {{type: dimse, port: {dicom}, ae_title: RADBRIDGE}}
destinations: [{{name: archive, type: null}}]
---
name: notes
source: {{type: http}}
transformers: [{{function: "tests.test_logs_without_phi:shout"}}]
destinations: [{{name: out, type: null}}]
"""


def test_hl7_and_dicom_traffic_leaves_no_phi_in_the_json_log(tmp_path: Path) -> None:
    hl7_port, dicom_port = free_port(), free_port()
    node = RadbridgeNode(tmp_path, channel_yaml=CHANNELS.format(hl7=hl7_port, dicom=dicom_port),
                         database_url=f"sqlite:///{tmp_path / 'store.db'}", name="logs",
                         extra_args=("--log-format", "json", "--log-level", "DEBUG"))
    try:
        node.start()
        good = adt_a01("LOG-1", patient=MRN).replace("EVERYMAN^ADAM^A^III", NAME)
        good = good.replace("19610615", BIRTH)
        refused = good.replace("EVN|A01|20261124101500\r", "").replace("LOG-1", "LOG-2")
        with socket.create_connection(("127.0.0.1", hl7_port), timeout=10) as peer:
            peer.sendall(frame(good) + frame(refused))
            acks = read_frames(peer, 2)
        assert [msa(a)[1] for a in acks] == ["AA", "AE"]  # ADT without EVN: refused

        [path] = make_ct_series(tmp_path / "ct", 1, rows=16, columns=16, patient_id=MRN,
                                patient_name=NAME, PatientBirthDate=BIRTH)
        ae = AE(ae_title="MODALITY")
        # the file's own transfer syntax only: with two offered, the SCP may accept the
        # other one, and then pynetdicom has no context to send this file in
        ae.add_requested_context(CT_IMAGE, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", dicom_port, ae_title="RADBRIDGE")
        assert assoc.is_established
        try:
            assert assoc.send_c_store(path).Status == 0x0000
        finally:
            assoc.release()

        posted = node.post(f"PID|1||{MRN}||{NAME}||{BIRTH}".encode(), channel="notes")
        assert posted.status_code == 202, posted.text

        def settled() -> bool:
            listed = node.client.get("/api/messages", params={"limit": "10"}).json()
            return {(m["channel"], m["status"]) for m in listed["messages"]} >= {
                ("notes", "errored"), ("images", "routed"), ("hl7", "routed")}

        wait_until(settled, 20.0, "every message processed (the note's transformer failed)")
        assert node.stop_gracefully() == 0
    finally:
        node.close()
    lines = [line for line in node.log_text().splitlines() if not line.startswith("===")]
    entries = [json.loads(line) for line in lines]
    assert len(entries) > 10
    for entry in entries:
        assert {"time", "level", "logger", "message", "node"} <= set(entry), entry
        assert entry["node"] == "logs"
    loggers = {entry["logger"] for entry in entries}
    assert {"radbridge.interfaces.mllp.listener", "radbridge.interfaces.dimse.scp",
            "radbridge.engine.registry.destination", "radbridge.engine.runtime"} <= loggers
    text = "\n".join(lines)
    for secret in (MRN, "ZEBRAFISH", "QUENTIN", BIRTH):
        assert secret not in text, secret
