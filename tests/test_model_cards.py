"""Model cards are checked like channel files, and routing picks the series each model
takes, or says why none fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from radbridge.errors import ConfigError
from radbridge.inference.cards import ModelCard, load_cards
from radbridge.inference.routing import SeriesFacts, route


def card(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "ich-ct", "version": "0.1.0", "task": "triage", "use_case": "stroke",
        "intended_use": "Demonstration: flags possible intracranial haemorrhage on head CT.",
        "device_identifier": "RADBRIDGE-DEMO-ICH", "demonstration": True,
        "series": {"modalities": ["CT"], "body_parts": ["HEAD"], "contrast": False,
                   "slice_thickness": {"max": 5.0}, "min_instances": 20},
        "preprocessing": {"kind": "volume", "size": [32, 64, 64], "spacing": [5, 1, 1],
                          "window": {"min": 0, "max": 80}},
        "backend": {"kind": "onnx", "path": "ich-ct.onnx"},
        "inputs": {"volume": [1, 32, 64, 64]},
        "findings": [{"output": "probability", "threshold": 0.5, "emergent": True,
                      "finding": {"code": "274100004", "system": "SCT",
                                  "display": "Cerebral hemorrhage"}}],
    }
    base.update(changes)
    return base


def write(folder: Path, name: str, document: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_card_loads_and_its_digest_names_its_content(tmp_path):
    write(tmp_path, "ich.yaml", card())
    [(path, loaded)] = load_cards([tmp_path])
    assert (loaded.key, loaded.demonstration, path.name) == ("ich-ct:0.1.0", True, "ich.yaml")
    same = ModelCard.model_validate(card())
    other = ModelCard.model_validate(card(version="0.2.0"))
    assert loaded.digest() == same.digest() != other.digest()


def test_every_problem_names_the_file_and_the_field(tmp_path):
    bad = card(tresholds=1)
    bad["preprocessing"] = {"kind": "volume", "size": [64, 64]}
    bad["series"] = {"modalities": ["CT"], "description": "(unclosed"}
    write(tmp_path, "bad.yaml", bad)
    write(tmp_path, "a.yaml", card())
    write(tmp_path, "b.yaml", card())
    with pytest.raises(ConfigError) as caught:
        load_cards([tmp_path])
    found = {(Path(i.file).name, i.path) for i in caught.value.issues}
    assert ("bad.yaml", "tresholds") in found
    assert ("bad.yaml", "series") in found       # the pattern does not compile
    assert ("b.yaml", "version") in found        # ich-ct:0.1.0 twice
    assert any("defined twice" in i.message for i in caught.value.issues)


def test_a_volume_needs_three_dimensions():
    with pytest.raises(ValueError, match="a volume needs"):
        ModelCard.model_validate(card(preprocessing={"kind": "volume", "size": [64, 64]}))


HEAD_CT = SeriesFacts("1.1", "CT", 36, body_part="HEAD", description="Head w/o",
                      slice_thickness=5.0)
HEAD_CT_THIN = SeriesFacts("1.2", "CT", 180, body_part="HEAD", description="Head thin",
                           slice_thickness=1.0)
CTA = SeriesFacts("1.3", "CT", 400, body_part="HEAD", description="CTA head neck",
                  slice_thickness=0.6, contrast=True)
SCOUT = SeriesFacts("1.4", "CT", 2, body_part="HEAD", description="Scout")


def test_each_model_takes_the_series_that_fits_it_best():
    ich = ModelCard.model_validate(card())
    lvo = ModelCard.model_validate(card(
        name="lvo-cta", use_case="stroke",
        series={"modalities": ["CT"], "contrast": True, "description": "cta|angio",
                "min_instances": 100}))
    fundus = ModelCard.model_validate(card(
        name="dr-fundus", series={"modalities": ["OP"]},
        preprocessing={"kind": "photograph", "size": [224, 224], "channels": 3}))
    result = route([SCOUT, HEAD_CT, HEAD_CT_THIN, CTA], [ich, lvo, fundus])
    assert [(a.card.name, a.series_uid) for a in result.assignments] == [
        ("ich-ct", "1.2"), ("lvo-cta", "1.3")]
    [skipped] = result.skipped
    assert (skipped.card.name, skipped.reason) == ("dr-fundus",
                                                   "no series fits: modality CT is not OP")


def test_none_fits_is_recorded_with_the_closest_reason():
    ich = ModelCard.model_validate(card())
    result = route([SCOUT], [ich])
    assert result.assignments == ()
    assert result.skipped[0].reason == "no series fits: slice thickness unknown"
    any_thickness = ModelCard.model_validate(card(series={"modalities": ["CT"],
                                                          "min_instances": 20}))
    assert route([SCOUT, SeriesFacts("2.1", "MR", 50)], [any_thickness]).skipped[0].reason \
        == "no series fits: 2 instance(s), fewer than 20"  # the scout came closest
    assert route([], [ich]).skipped[0].reason == "the study has no series"


def test_a_model_for_other_procedures_is_skipped():
    ich = ModelCard.model_validate(card(series={"modalities": ["CT"],
                                                "procedure_codes": ["CTHEADWO"]}))
    assert route([HEAD_CT], [ich], ["XRCHEST1V"]).skipped[0].reason.startswith(
        "the order's procedure")
    assert route([HEAD_CT], [ich], ["CTHEADWO"]).assignments[0].series_uid == "1.1"
    assert route([HEAD_CT], [ich], []).assignments  # no order known: the series decide
