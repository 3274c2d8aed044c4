"""The studies views (API and CLI) show the DICOM index without names or birth dates."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from radbridge.interfaces.api import ApiContext, create_app
from radbridge.interfaces.cli import main
from tests.engine_harness import harness
from tests.test_dicom_store_index import CT_SERIES, SR_SERIES, STUDY, _channels, _record, _store


@pytest.fixture
def indexed(database, tmp_path):
    with harness(database, tmp_path, _channels()) as h:
        _store(h, _record(f"{CT_SERIES}.1"), b"one")
        _store(h, _record(f"{CT_SERIES}.2"), b"two")
        _store(h, _record(f"{CT_SERIES}.2"), b"two, corrected")
        _store(h, _record(f"{SR_SERIES}.1", SR_SERIES, "SR"), b"sr")
        yield h


def test_api_lists_and_shows_studies(indexed):
    context = ApiContext(indexed.database, indexed.blobs, indexed.channels, "node-a", 1024,
                         registry=CollectorRegistry())
    with TestClient(create_app(context)) as client:
        listed = client.get("/api/studies", params={"accession": "ACC-9"}).json()["studies"]
        none = client.get("/api/studies", params={"accession": "nope"}).json()["studies"]
        detail = client.get(f"/api/studies/{STUDY}", params={"instances": "true"}).json()
        missing = client.get("/api/studies/1.2.3.404")
        bad = client.get("/api/studies", params={"limit": "many"})
        first_page = client.get("/api/studies", params={"offset": "0"})
        assert first_page.status_code == 200 and len(first_page.json()["studies"]) == 1
    assert [(s["study_uid"], s["instance_count"], s["state"]) for s in listed] == [
        (STUDY, 3, "collecting")]
    assert none == []
    assert [s["series_uid"] for s in detail["series"]] == [CT_SERIES, SR_SERIES]
    ct = detail["series"][0]["instances"]
    assert [(i["sop_instance_uid"][-2:], i["version"], i["current"]) for i in ct] == [
        (".1", 1, True), (".2", 1, False), (".2", 2, True)]
    assert detail["superseded_versions"] == 1
    assert "DOE" not in json.dumps(detail) and "patient_name" not in detail
    assert missing.status_code == 404 and bad.status_code == 400


def test_cli_lists_and_shows_studies(indexed, capsys):
    url = indexed.database.url
    assert main(["studies", "list", "--database-url", url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["studies"]
    assert [s["modalities"] for s in listed] == ["CT\\SR"]
    assert main(["studies", "show", STUDY, "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "ACME" in out and "DOE" not in out  # (UIDs wrap in a narrow terminal)
    assert main(["studies", "show", "1.2.3.404", "--database-url", url]) == 1
