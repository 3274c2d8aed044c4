"""A PACS that does not take the SR SOP class (dcmtk's storescp with a CT-only profile):
the SR's delivery to it ends dead with the reason recorded, while the other destination
of the same channel delivers the same SR."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from radbridge.mappings.sr.tid1500 import render_sr
from tests.e2e.conftest import Spawn, wait_until
from tests.peers.dcmtk import Storescp
from tests.test_sr_render import ct_series, sample_result

pytestmark = pytest.mark.slow

CT_ONLY = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[CTOnly]
PresentationContext1 = CTImageStorage\\Uncompressed

[[Profiles]]
[CTOnly]
PresentationContexts = CTOnly
"""


def channel(port: int) -> str:
    return f"""\
name: pacs-test
source: {{type: http}}
destinations:
  - name: pacs
    type: dimse
    peer: {{ae_title: CTONLY, host: 127.0.0.1, port: {port}, connect_timeout: 5s}}
    queue: {{max_attempts: 3, backoff: {{initial: 0.2s, max: 1s, jitter: 0.1s}}}}
  - name: archive
    type: file
    directory: outbox/pacs
    filename: "{{idempotency_key}}.dcm"
"""


def test_an_sr_the_pacs_refuses_is_recorded_and_the_other_destination_still_gets_it(
        spawn: Spawn, tmp_path: Path) -> None:
    sources = ct_series(tmp_path / "ct")
    result = sample_result(study_uid=str(sources[0].StudyInstanceUID),
                           series_uids=(str(sources[0].SeriesInstanceUID),))
    buffer = io.BytesIO()
    render_sr(result, sources).save_as(buffer, enforce_file_format=True)
    config = tmp_path / "ct-only.cfg"
    config.write_text(CT_ONLY)
    with Storescp("CTONLY", tmp_path / "received", accept_all=False,
                  extra_args=["-xf", str(config), "CTOnly"]) as scp:
        node = spawn(channel_yaml=channel(scp.port),
                     database_url=f"sqlite:///{tmp_path / 's.db'}").start()
        answer = node.client.post("/api/channels/pacs-test/messages",
                                  content=buffer.getvalue(),
                                  headers={"Content-Type": "application/dicom"})
        assert answer.status_code == 202, answer.text
        message_id = answer.json()["message_id"]

        def settled() -> dict[str, dict] | None:
            detail = node.client.get(f"/api/messages/{message_id}").json()
            by_name = {d["destination"]: d for d in detail["deliveries"]}
            done = all(d["status"] in ("sent", "dead") for d in by_name.values())
            return by_name if len(by_name) == 2 and done else None

        wait_until(lambda: settled() is not None, 60, "both deliveries to settle")
        deliveries = settled()
        assert deliveries is not None
        assert deliveries["archive"]["status"] == "sent"
        assert deliveries["pacs"]["status"] == "dead"
        assert "SOP class" in (deliveries["pacs"]["last_error"] or "") or \
            "presentation context" in (deliveries["pacs"]["last_error"] or "")
        assert not list((tmp_path / "received").glob("*"))
        assert len(list((node.data_dir / "outbox" / "pacs").glob("*.dcm"))) == 1
