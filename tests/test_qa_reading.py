"""The radiologist's call from a final report: sentences and whole reports for the six
demonstration findings, coded OBX values, and reading rules from config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radbridge.qa.errors import QaConfigError
from radbridge.qa.reading import (
    DEFAULT_RULES,
    Call,
    FindingRule,
    radiologist_positive,
    read_coded,
    read_text,
    resolve,
    rules_from_config,
)

RULES = {rule.code: rule for rule in DEFAULT_RULES}
ICH, LVO, PE = RULES["274100004"], RULES["20059004"], RULES["59282003"]
MASS, FRACTURE, DR = RULES["4147007"], RULES["72704001"], RULES["4855003"]

POS, NEG, UNC, NOT = Call.POSITIVE, Call.NEGATIVE, Call.UNCERTAIN, Call.NOT_MENTIONED

SENTENCES = [
    # intracranial haemorrhage
    (ICH, "No evidence of intracranial hemorrhage.", NEG),
    (ICH, "No acute intracranial haemorrhage, mass effect or midline shift.", NEG),
    (ICH, "Acute right subdural hematoma measuring 8 mm.", POS),
    (ICH, "Small volume subarachnoid hemorrhage in the left sylvian fissure.", POS),
    (ICH, "Possible small subarachnoid hemorrhage in the right frontal sulci.", UNC),
    (ICH, "A small parenchymal bleed cannot be excluded.", UNC),
    (ICH, "Hyperdensity that may represent hemorrhage versus calcification.", UNC),
    (ICH, "No change in the known hemorrhage.", POS),        # pseudo-negation
    (ICH, "No interval change in the size of the left frontal hematoma.", POS),
    (ICH, "No new hemorrhage.", UNC),                         # says nothing of known blood
    (ICH, "Stable subdural hematoma with no new hemorrhage.", POS),
    (ICH, "The previously seen hematoma has resolved.", NEG),
    (ICH, "Hemorrhage is no longer seen.", NEG),
    (ICH, "Hemorrhage: none.", NEG),
    (ICH, "No midline shift, but there is a small SAH.", POS),  # "but" ends the negation
    (ICH, "Without contrast, there is an acute SDH.", POS),     # "without contrast" is no negation
    (ICH, "Hemorrhagic transformation of the left MCA infarct.", POS),
    (ICH, "No definite hemorrhage.", NEG),
    (ICH, "Normal study; no ICH.", NEG),
    (ICH, "No mass effect or midline shift.", NOT),
    (ICH, "Age-related volume loss.", NOT),
    # large vessel occlusion
    (LVO, "No large vessel occlusion.", NEG),
    (LVO, "Abrupt cut-off of the left M1 segment.", POS),
    (LVO, "The right ICA is occluded at its terminus.", POS),
    (LVO, "No proximal occlusion; possible distal M2 occlusion.", UNC),
    (LVO, "Patent intracranial vasculature without LVO.", NEG),
    (LVO, "Findings are suspicious for a right MCA occlusion.", UNC),
    # pulmonary embolism
    (PE, "No filling defect to suggest pulmonary embolism.", NEG),
    (PE, "Acute PE in the right lower lobe segmental arteries.", POS),
    (PE, "Saddle embolus extending into both main pulmonary arteries.", POS),
    (PE, "Negative for pulmonary embolism.", NEG),
    (PE, "Subsegmental PE cannot be excluded due to motion.", UNC),
    (PE, "No findings suspicious for pulmonary embolism.", NEG),  # the first trigger governs
    (PE, "Probably no PE.", UNC),
    (PE, "Evaluate for PE.", NOT),                                # a question, not a call
    (PE, "Pulmonary emboli: none.", NEG),
    (PE, "Chronic thromboembolic disease.", POS),
    # mammography mass
    (MASS, "No suspicious mass, calcification or architectural distortion.", NEG),
    (MASS, "Irregular spiculated mass in the upper outer quadrant of the left breast.", POS),
    (MASS, "Focal asymmetry, possibly a mass.", UNC),
    (MASS, "No mass suspicious for malignancy.", NEG),
    (MASS, "Stable benign-appearing masses bilaterally.", POS),
    (MASS, "Scattered fibroglandular densities.", NOT),
    # fracture
    (FRACTURE, "No acute fracture or dislocation.", NEG),
    (FRACTURE, "Nondisplaced fracture of the distal radius.", POS),
    (FRACTURE, "Subtle lucency may represent a nondisplaced fracture.", UNC),
    (FRACTURE, "Fx of the fifth metatarsal base.", POS),
    (FRACTURE, "Fracture is not identified.", NEG),
    (FRACTURE, "Questionable avulsion at the lateral malleolus.", UNC),
    (FRACTURE, "Soft tissue swelling without fracture.", NEG),
    (FRACTURE, "Mild degenerative change.", NOT),
    # diabetic retinopathy
    (DR, "No signs of diabetic retinopathy.", NEG),
    (DR, "Moderate nonproliferative diabetic retinopathy.", POS),
    (DR, "Scattered microaneurysms and dot-blot haemorrhages.", POS),
    (DR, "Hard exudates near the fovea, suspicious for macular oedema.", POS),
    (DR, "Retinopathy: absent.", NEG),
    (DR, "Normal optic disc and macula.", NOT),
]


@pytest.mark.parametrize(("rule", "sentence", "expected"), SENTENCES,
                         ids=[s for _, s, _ in SENTENCES])
def test_sentence(rule: FindingRule, sentence: str, expected: Call) -> None:
    assert read_text(sentence, rule) is expected


def test_the_sentence_set_covers_every_finding_and_call() -> None:
    assert len(SENTENCES) >= 40
    assert {rule.code for rule, _, _ in SENTENCES} == set(RULES)
    assert {call for _, _, call in SENTENCES} == set(Call)


def test_matching_ignores_case_and_needs_whole_words() -> None:
    assert read_text("NO ACUTE HEMORRHAGE.", ICH) is NEG
    assert read_text("Small SDH.", ICH) is POS
    assert read_text("Which way.", ICH) is NOT          # "ich" inside a word
    assert read_text("Type 2 diabetes, pes planus.", PE) is NOT  # abbreviations: capitals
    assert read_text("Bilateral PEs.", PE) is POS


def test_an_affirmed_mention_anywhere_wins_over_template_negatives() -> None:
    report = ("FINDINGS: No hemorrhage. The ventricles are normal in size. "
              "Small subdural hematoma along the left convexity.")
    assert read_text(report, ICH) is POS


def test_the_impression_decides_when_it_mentions_the_finding() -> None:
    report = ("FINDINGS:\nHyperdensity in the left frontal lobe, possibly a hematoma.\n"
              "IMPRESSION:\nNo acute hemorrhage. Calcified meningioma.")
    assert read_text(report, ICH) is NEG


def test_the_body_decides_when_the_impression_is_silent() -> None:
    report = ("FINDINGS: Left frontal intraparenchymal hematoma, 2 cm.\n"
              "IMPRESSION: Findings discussed with the stroke team.")
    assert read_text(report, ICH) is POS


def test_indication_and_technique_are_not_read() -> None:
    report = ("CLINICAL HISTORY: Dyspnoea, ? PE.\n"
              "TECHNIQUE: CTA chest, PE protocol.\n"
              "FINDINGS: Good opacification of the pulmonary arteries. No filling defect.\n")
    assert read_text(report, PE) is NEG
    assert read_text("INDICATION: rule out bleed.\nFINDINGS: Normal study.", ICH) is NOT


def test_a_header_on_its_own_line_without_colon() -> None:
    report = ("Findings\nNo hemorrhage.\nImpression\n1. Acute occlusion of the left M1 "
              "segment.\n2. No intracranial hemorrhage.")
    assert read_text(report, LVO) is POS
    assert read_text(report, ICH) is NEG


def test_one_stroke_report_read_for_two_findings() -> None:
    report = ("EXAM: CT head and CTA head and neck.\n"
              "FINDINGS: No intracranial hemorrhage. Hyperdense left MCA. Abrupt cutoff of "
              "the left M1 segment with poor distal reconstitution.\n"
              "IMPRESSION: Left M1 occlusion. No hemorrhage.")
    assert read_text(report, LVO) is POS
    assert read_text(report, ICH) is NEG


def test_a_negative_screening_mammogram_does_not_mention_a_mass() -> None:
    report = ("FINDINGS: The breasts are almost entirely fatty. No suspicious calcifications "
              "or architectural distortion.\nIMPRESSION: BI-RADS 1: Negative.")
    assert read_text(report, MASS) is NOT
    assert resolve(read_text(report, MASS), MASS) is NEG


def test_a_follow_up_that_still_sees_the_old_blood_is_positive() -> None:
    report = ("COMPARISON: CT of yesterday.\nFINDINGS: No new hemorrhage. The right "
              "subdural hematoma is unchanged in thickness.\nIMPRESSION: Stable right "
              "subdural hematoma. No new hemorrhage.")
    assert read_text(report, ICH) is POS


def test_an_empty_report_mentions_nothing() -> None:
    assert read_text("", FRACTURE) is NOT


PLAIN_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,;", max_size=120)


@given(PLAIN_TEXT)
def test_an_affirmed_sentence_stays_positive_whatever_precedes_it(filler: str) -> None:
    report = f"FINDINGS: {filler}. Acute subdural hematoma."
    assert read_text(report, ICH) is POS


@given(st.text(max_size=300))
def test_any_text_reads_without_error(text: str) -> None:
    assert read_text(text, PE) in set(Call)


@pytest.mark.parametrize(("code", "system", "call"), [
    ("10828004", "SCT", POS),           # what Radbridge's own ORU sends
    ("260385009", "SCT", NEG),
    ("52101004", "SNOMED", POS),        # Present
    ("2667000", "http://snomed.info/sct", NEG),  # Absent
    ("Y", "HL70136", POS),
    ("N", "HL70136", NEG),
    ("POS", None, POS),
    ("neg", "", NEG),
    ("10828004", None, POS),            # a code sent without its system
    ("Y", "SCT", None),                 # Y is no SNOMED code
    ("10828004", "LN", None),           # nor is it LOINC's
    ("MAYBE", None, None),
    (None, None, None),
])
def test_read_coded(code: str | None, system: str | None, call: Call | None) -> None:
    assert read_coded(code, system) is call


def test_default_rules_carry_the_cards_codes() -> None:
    assert {(r.code, r.system, r.display) for r in DEFAULT_RULES} == {
        ("274100004", "SCT", "Cerebral hemorrhage"),
        ("20059004", "SCT", "Occlusion of cerebral artery"),
        ("59282003", "SCT", "Pulmonary embolism"),
        ("4147007", "SCT", "Mass"),
        ("72704001", "SCT", "Fracture"),
        ("4855003", "SCT", "Diabetic retinopathy"),
    }


def test_resolve_maps_uncertain_and_unmentioned_by_the_rule() -> None:
    assert resolve(UNC, ICH) is UNC and radiologist_positive(UNC, ICH) is None
    assert resolve(NOT, ICH) is NEG and radiologist_positive(NOT, ICH) is False
    assert radiologist_positive(POS, ICH) is True
    strict = FindingRule("1", "99RDB", "x", ("x",), uncertain_as=POS,
                         not_mentioned_as=NOT)
    assert resolve(UNC, strict) is POS and radiologist_positive(NOT, strict) is None


def test_finding_rule_takes_lists_and_strings_and_stores_tuples_and_calls() -> None:
    rule = FindingRule("1", "99RDB", "Nodule", ["nodule", " lung  nodule "],  # type: ignore[arg-type]
                       uncertain_as="NEGATIVE")  # type: ignore[arg-type]
    assert rule.keywords == ("nodule", "lung nodule")
    assert rule.uncertain_as is NEG


def test_rules_from_config_takes_defaults_for_known_codes() -> None:
    rules = rules_from_config({"findings": [
        {"code": "274100004", "uncertain_as": "positive"},
        {"code": 123456, "system": "99RDB", "display": "Nodule", "keywords": ["nodule"]},
    ]})
    assert rules[0].keywords == ICH.keywords and rules[0].display == ICH.display
    assert rules[0].uncertain_as is POS
    assert (rules[1].code, rules[1].keywords) == ("123456", ("nodule",))
    assert read_text("Possible hemorrhage.", rules[0]) is UNC
    assert resolve(read_text("Possible hemorrhage.", rules[0]), rules[0]) is POS


@pytest.mark.parametrize(("config", "field"), [
    ({"findings": [{"code": "274100004", "keyword": ["bleed"]}]}, "findings[0].keyword"),
    ({"findings": [{"code": "1", "system": "99RDB", "display": "x"}]},
     "findings[0].keywords"),
    ({"findings": [{"code": "1", "system": "99RDB", "keywords": ["x"]}]},
     "findings[0].display"),
    ({"findings": [{"code": "274100004", "keywords": []}]}, "findings[0].keywords"),
    ({"findings": [{"code": "274100004", "keywords": "bleed"}]}, "findings[0].keywords"),
    ({"findings": [{"code": "274100004", "uncertain_as": "maybe"}]},
     "findings[0].uncertain_as"),
    ({"findings": [{"code": "274100004", "not_mentioned_as": "positive"}]},
     "findings[0].not_mentioned_as"),
    ({"findings": [{"code": "274100004"}, {"code": "274100004"}]}, "findings[1].code"),
    ({"findings": [{"system": "SCT"}]}, "findings[0].code"),
    ({"findings": ["274100004"]}, "findings[0]"),
    ({"findings": [], "extra": 1}, "findings"),
    ({"findings": {"code": "1"}}, "findings"),
])
def test_rules_from_config_names_the_bad_field(config: dict[str, object], field: str) -> None:
    with pytest.raises(QaConfigError) as caught:
        rules_from_config(config)
    assert caught.value.field == field
