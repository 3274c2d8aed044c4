"""The radiologist's call on a finding, from the final report: coded OBX values first,
else rules on the report text.

How text is read (NegEx-style, written for this use):

- Sections. A line starting with a known header ("IMPRESSION:", "FINDINGS:", ...) opens a
  section. INDICATION, CLINICAL HISTORY, TECHNIQUE, COMPARISON and the like are skipped:
  they state the question ("rule out PE", "PE protocol"), not the answer. IMPRESSION (or
  CONCLUSION) has precedence: if it mentions the finding, its call is the call; only when
  it does not is the rest of the report read. Text before any header is report body.
- Sentences end at ".", "!" or a line break; a clause within one ends at "but",
  "however", "although", "though", "whereas", "except", "other than", "apart from",
  "aside from" or ";".
- Each keyword mention (case-insensitive, whole words, a space or hyphen between words,
  an optional plural "s"/"es" on words of four letters or more; an abbreviation written
  with two capitals or more, "PE", "ICH", only in capitals, so "pes planus" is no PE)
  is judged by the first trigger before it in its clause, else the first trigger after
  it: negation ("no", "no evidence of", "without",
  "negative for", "free of", "absence of", "resolved"; after: "not seen",
  "not identified", "ruled out", "excluded", "resolved", "absent", "none") gives
  NEGATIVE, uncertainty ("possible", "probable", "suspicious for", "may represent",
  "questionable"; after: "cannot be excluded", ...) UNCERTAIN, a question or history
  ("rule out", "evaluate for", "history of"; after: "protocol") drops the mention, no
  trigger POSITIVE. Taking the first trigger makes "no findings suspicious for PE"
  negative and "probably no PE" uncertain.
- Pseudo-triggers are masked first: "no change in the known hemorrhage", "no interval
  change", "no increase", "without contrast" negate nothing, so the mention is affirmed.
  "mass effect" is masked too, so it is no mention of a mass.
- "No new hemorrhage" is UNCERTAIN: it denies new bleeding and says nothing of known
  blood; a report that still sees the old bleed says so in words ("stable subdural
  hematoma"), and that affirmed mention decides. Likewise "no additional", "no further".
- "No definite hemorrhage" is NEGATIVE: radiologists use it to report absence.
- Known limits, as in NegEx: a negation early in a clause reaches every finding after it
  ("no midline shift and a small bleed" reads negative); "history of" drops a mention
  even when the finding persists.
- Across sentences of a section: any affirmed mention wins ("No hemorrhage. ... Small
  subdural hematoma." is POSITIVE, as templates list negatives before the specific
  finding), then uncertain, then negated, else NOT_MENTIONED.

The caller maps UNCERTAIN and NOT_MENTIONED with `resolve` (per rule: by default an
uncertain call stays uncertain, to be counted apart, and an unmentioned finding counts as
negative, the reading convention of reporting pertinent positives).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from radbridge.qa.errors import QaConfigError


class Call(enum.Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    UNCERTAIN = "uncertain"
    NOT_MENTIONED = "not_mentioned"


_UNCERTAIN_AS = (Call.POSITIVE, Call.NEGATIVE, Call.UNCERTAIN)
_NOT_MENTIONED_AS = (Call.NEGATIVE, Call.UNCERTAIN, Call.NOT_MENTIONED)


@dataclass(frozen=True)
class FindingRule:
    """How to find one coded finding in report text. Accepts lists and strings for
    keywords and calls (as config gives them) and stores tuples and `Call`s."""

    code: str
    system: str
    display: str
    keywords: tuple[str, ...]
    uncertain_as: Call = Call.UNCERTAIN
    not_mentioned_as: Call = Call.NEGATIVE

    def __post_init__(self) -> None:
        for name in ("code", "system", "display"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise QaConfigError(name, "a non-empty string")
        object.__setattr__(self, "keywords", _keywords(self.keywords))
        object.__setattr__(self, "uncertain_as",
                           _call(self.uncertain_as, "uncertain_as", _UNCERTAIN_AS))
        object.__setattr__(self, "not_mentioned_as",
                           _call(self.not_mentioned_as, "not_mentioned_as", _NOT_MENTIONED_AS))


def _keywords(raw: object) -> tuple[str, ...]:
    if isinstance(raw, str) or not isinstance(raw, Iterable):
        raise QaConfigError("keywords", "a non-empty list of words or phrases")
    words = tuple(raw)
    if not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise QaConfigError("keywords", "a non-empty list of non-empty words or phrases")
    return tuple(" ".join(w.split()) for w in words)


def _call(raw: object, field: str, allowed: tuple[Call, ...]) -> Call:
    try:
        call = raw if isinstance(raw, Call) else Call(str(raw).strip().lower())
    except ValueError:
        call = None
    if call is None or call not in allowed:
        raise QaConfigError(field, "one of " + ", ".join(c.value for c in allowed))
    return call


def _rule(code: str, display: str, *keywords: str) -> FindingRule:
    return FindingRule(code, "SCT", display, keywords)


DEFAULT_RULES: tuple[FindingRule, ...] = (
    _rule("274100004", "Cerebral hemorrhage", "hemorrhage", "haemorrhage", "hemorrhagic",
          "haemorrhagic", "bleed", "bleeding", "hematoma", "haematoma", "blood products",
          "ICH", "SAH", "SDH", "EDH", "IPH", "IVH"),
    _rule("20059004", "Occlusion of cerebral artery", "large vessel occlusion", "LVO",
          "M1 occlusion", "M2 occlusion", "ICA occlusion", "MCA occlusion", "occlusion",
          "occluded", "cut off", "cutoff", "thrombus"),
    _rule("59282003", "Pulmonary embolism", "pulmonary embolism", "pulmonary emboli",
          "pulmonary embolus", "PE", "PEs", "embolism", "emboli", "embolus", "thromboembolism",
          "thromboembolic", "filling defect", "clot"),
    _rule("4147007", "Mass", "mass", "lesion", "lump", "tumor", "tumour"),
    _rule("72704001", "Fracture", "fracture", "fractured", "fx", "cortical break",
          "cortical breach", "avulsion"),
    _rule("4855003", "Diabetic retinopathy", "diabetic retinopathy", "retinopathy", "NPDR",
          "PDR", "microaneurysm", "dot and blot hemorrhage", "dot and blot haemorrhage",
          "dot blot hemorrhage", "dot blot haemorrhage", "retinal hemorrhage",
          "retinal haemorrhage", "exudate", "cotton wool spot", "neovascularization",
          "neovascularisation", "macular edema", "macular oedema"),
)
"""One rule per finding of the shipped demonstration models (codes and displays as in
their cards; mammo-mass's second code, 76752008 Breast, is its body site, not a finding)."""


def rules_from_config(obj: Mapping[str, Any]) -> tuple[FindingRule, ...]:
    """Rules from a config mapping `{"findings": [{code, system?, display?, keywords?,
    uncertain_as?, not_mentioned_as?}, ...]}`. A finding with a default rule's code may
    leave out display and keywords to take the default's."""
    if not isinstance(obj, Mapping) or set(obj) != {"findings"}:
        raise QaConfigError("findings", "a mapping with exactly one key, findings")
    items = obj["findings"]
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        raise QaConfigError("findings", "a list of finding rules")
    rules = tuple(_rule_from_item(item, f"findings[{i}]") for i, item in enumerate(items))
    seen: set[tuple[str, str]] = set()
    for index, rule in enumerate(rules):
        if (rule.system, rule.code) in seen:
            raise QaConfigError(f"findings[{index}].code", "a code not already listed")
        seen.add((rule.system, rule.code))
    return rules


_RULE_KEYS = {"code", "system", "display", "keywords", "uncertain_as", "not_mentioned_as"}


def _rule_from_item(item: object, where: str) -> FindingRule:
    if not isinstance(item, Mapping):
        raise QaConfigError(where, "a mapping with code and keywords")
    unknown = sorted(set(item) - _RULE_KEYS, key=str)
    if unknown:
        raise QaConfigError(f"{where}.{unknown[0]}", "one of " + ", ".join(sorted(_RULE_KEYS)))
    code = item.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        code = str(code)
    if not isinstance(code, str) or not code.strip():
        raise QaConfigError(f"{where}.code", "a code such as '274100004'")
    system = item.get("system", "SCT")
    default = next((r for r in DEFAULT_RULES if (r.system, r.code) == (system, code)), None)
    try:
        return FindingRule(
            code=code.strip(), system=system,
            display=item.get("display", default.display if default else None),
            keywords=item.get("keywords", default.keywords if default else None),
            uncertain_as=item.get("uncertain_as", Call.UNCERTAIN),
            not_mentioned_as=item.get("not_mentioned_as", Call.NEGATIVE))
    except QaConfigError as exc:
        raise QaConfigError(f"{where}.{exc.field}", exc.expected) from exc


def resolve(call: Call, rule: FindingRule) -> Call:
    """The call as counted for `rule`: UNCERTAIN and NOT_MENTIONED mapped by its settings."""
    if call is Call.UNCERTAIN:
        return rule.uncertain_as
    if call is Call.NOT_MENTIONED:
        return rule.not_mentioned_as
    return call


def radiologist_positive(call: Call, rule: FindingRule) -> bool | None:
    """The reference for the 2x2 table, after `resolve`; None leaves the study out."""
    resolved = resolve(call, rule)
    return {Call.POSITIVE: True, Call.NEGATIVE: False}.get(resolved)


# --- coded values -----------------------------------------------------------------------

_SNOMED_SYSTEMS = {"SCT", "SNOMED", "SNOMEDCT", "SNOMED-CT", "SNM", "HTTP://SNOMED.INFO/SCT",
                   "2.16.840.1.113883.6.96"}
_YES_NO_SYSTEMS = {"HL70136", "0136", "HL7-0136",
                   "HTTP://TERMINOLOGY.HL7.ORG/CODESYSTEM/V2-0136"}
_SNOMED_CALLS = {"10828004": Call.POSITIVE, "260385009": Call.NEGATIVE,
                 "52101004": Call.POSITIVE, "2667000": Call.NEGATIVE}
_YES_NO_CALLS = {"Y": Call.POSITIVE, "N": Call.NEGATIVE}
_TEXT_CALLS = {"POS": Call.POSITIVE, "POSITIVE": Call.POSITIVE, "NEG": Call.NEGATIVE,
               "NEGATIVE": Call.NEGATIVE, **_YES_NO_CALLS}


def read_coded(code: str | None, system: str | None) -> Call | None:
    """The call an OBX-5 value codes: SNOMED 10828004 Positive / 260385009 Negative (what
    Radbridge's ORU sends), 52101004 Present / 2667000 Absent, HL7 table 0136 Y/N, or
    the text POS/NEG; None when the value means none of these, so text rules take over."""
    value = (code or "").strip().upper()
    scheme = (system or "").strip().upper()
    if scheme in _SNOMED_SYSTEMS:
        return _SNOMED_CALLS.get(value)
    if scheme in _YES_NO_SYSTEMS:
        return _YES_NO_CALLS.get(value)
    if not scheme and value in _SNOMED_CALLS:
        return _SNOMED_CALLS[value]  # a SNOMED code sent without its system
    return _TEXT_CALLS.get(value)


# --- report text ------------------------------------------------------------------------

class _Role(enum.Enum):
    NEGATION = "negation"
    UNCERTAINTY = "uncertainty"
    IGNORE = "ignore"
    PSEUDO = "pseudo"
    TERMINATOR = "terminator"


_BEFORE = frozenset({"before"})
_AFTER = frozenset({"after"})
_BOTH = _BEFORE | _AFTER

_TRIGGERS: tuple[tuple[_Role, frozenset[str], tuple[str, ...]], ...] = (
    (_Role.NEGATION, _BEFORE, (
        "no", "no evidence of", "no sign of", "no signs of", "without", "negative for",
        "free of", "absence of", "resolution of", "not", "nor", "neither")),
    (_Role.NEGATION, _AFTER, (
        "not seen", "not identified", "not demonstrated", "not present", "not visualized",
        "not visualised", "not detected", "not evident", "not appreciated", "ruled out",
        "excluded", "absent", "none", "negative")),
    (_Role.NEGATION, _BOTH, ("resolved", "no longer", ": no")),
    (_Role.UNCERTAINTY, _BEFORE, (
        "possible", "possibly", "probable", "probably", "questionable", "suspicious for",
        "suspicion of", "suspicion for", "concerning for", "suggestive of", "suspected",
        "may represent", "might represent", "could represent", "may be", "might be",
        "cannot exclude", "can not exclude", "cannot rule out", "equivocal",
        "indeterminate", "no new", "no additional", "no further")),
    (_Role.UNCERTAINTY, _AFTER, (
        "cannot be excluded", "can not be excluded", "cannot be ruled out", "not excluded",
        "not ruled out", "not entirely excluded", "not completely excluded", "is possible",
        "is suspected", "is questionable", "is not excluded")),
    (_Role.UNCERTAINTY, _BOTH, ("?", "versus", "vs", "likely", "unlikely")),
    (_Role.IGNORE, _BEFORE, (
        "rule out", "to rule out", "r/o", "to exclude", "evaluate for", "evaluation for",
        "assess for", "assessment for", "concern for", "history of", "h/o", "hx of",
        "question of")),
    (_Role.IGNORE, _AFTER, ("protocol",)),
    (_Role.PSEUDO, _BOTH, (
        "no change", "no interval change", "no significant change",
        "no significant interval change", "no increase", "no significant increase",
        "no decrease", "no enlargement", "no progression", "not changed",
        "not significantly changed", "not only", "without change", "without interval change",
        "without significant change", "without contrast", "without iv contrast",
        "without intravenous contrast", "mass effect")),
    (_Role.TERMINATOR, _BOTH, (
        "but", "however", "although", "though", "whereas", "except", "other than",
        "apart from", "aside from", ";")),
)

_SECTION_SKIPPED = {
    "indication", "indications", "clinical indication", "clinical history", "history",
    "clinical information", "clinical details", "clinical question", "reason for exam",
    "reason for examination", "reason for study", "reason for referral", "technique",
    "comparison", "comparisons", "procedure", "exam", "examination", "protocol"}
_SECTION_FIRST = {"impression", "impressions", "conclusion", "conclusions", "opinion",
                  "summary"}
_SECTION_BODY = {"findings", "finding", "report", "results", "addendum"}
_HEADER = re.compile(
    r"^[ \t]*(?P<name>"
    + "|".join(sorted((r"\s+".join(map(re.escape, name.split())) for name in
                       _SECTION_SKIPPED | _SECTION_FIRST | _SECTION_BODY),
                      key=len, reverse=True))
    + r")[ \t]*(?::|$)", re.IGNORECASE | re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!](?=\s|$)|\n")
_PRECEDENCE = {Call.POSITIVE: 3, Call.UNCERTAIN: 2, Call.NEGATIVE: 1, Call.NOT_MENTIONED: 0}


def _token(token: str) -> str:
    """A word of a phrase; an abbreviation (two capitals or more) only in capitals."""
    if sum(c.isupper() for c in token) >= 2:
        return f"(?-i:{re.escape(token)})"
    return re.escape(token)


def _pattern(phrase: str, plural: bool = False) -> str:
    """Regex for a phrase: whole words, any run of spaces or hyphens between words."""
    tokens = phrase.split()
    body = _token(tokens[0])
    for before, token in pairwise(tokens):
        gap = r"[\s\-]+" if before[-1].isalnum() and token[0].isalnum() else r"\s*"
        body += gap + _token(token)
    if plural and len(tokens[-1]) >= 4:
        body += "(?:e?s)?"  # not on "PE" or "fx": "pes", "fxs" are other words or none
    head = r"(?<!\w)" if tokens[0][0].isalnum() else ""
    tail = r"(?!\w)" if tokens[-1][-1].isalnum() else ""
    return head + body + tail


def _alternation(phrases: Iterable[str], plural: bool = False) -> re.Pattern[str]:
    """One regex trying longer phrases first, so "no evidence of" beats "no"."""
    ordered = sorted(set(phrases), key=len, reverse=True)
    return re.compile("|".join(_pattern(p, plural) for p in ordered), re.IGNORECASE)


def _key(phrase: str) -> str:
    """A phrase as matched, without case, spaces or hyphens ("Can not" is "cannot")."""
    return re.sub(r"[\s\-]+", "", phrase.lower())


_TRIGGER_OF = {_key(p): (role, sides) for role, sides, phrases in _TRIGGERS for p in phrases}
_TRIGGER_RE = _alternation(p for _, _, phrases in _TRIGGERS for p in phrases)


@functools.lru_cache(maxsize=256)
def _keyword_re(keywords: tuple[str, ...]) -> re.Pattern[str]:
    return _alternation(keywords, plural=True)


@dataclass(frozen=True)
class _Trigger:
    start: int
    end: int
    role: _Role
    sides: frozenset[str]


def _triggers(sentence: str) -> list[_Trigger]:
    found = []
    for match in _TRIGGER_RE.finditer(sentence):
        role, sides = _TRIGGER_OF[_key(match.group())]
        found.append(_Trigger(match.start(), match.end(), role, sides))
    return found


def _mention_call(start: int, end: int, triggers: list[_Trigger]) -> Call | None:
    """The call on one mention from the triggers of its clause; None drops it."""
    stops = [t for t in triggers if t.role is _Role.TERMINATOR]
    clause_start = max((t.end for t in stops if t.end <= start), default=0)
    clause_end = min((t.start for t in stops if t.start >= end), default=10**9)
    live = [t for t in triggers if t.role not in (_Role.TERMINATOR, _Role.PSEUDO)]
    before = [t for t in live if clause_start <= t.start and t.end <= start
              and "before" in t.sides]
    after = [t for t in live if end <= t.start and t.end <= clause_end and "after" in t.sides]
    if not before and not after:
        return Call.POSITIVE
    governing = (before or after)[0]
    return {_Role.NEGATION: Call.NEGATIVE, _Role.UNCERTAINTY: Call.UNCERTAIN}.get(
        governing.role)


def _strongest(calls: Iterable[Call]) -> Call:
    return max(calls, key=_PRECEDENCE.__getitem__, default=Call.NOT_MENTIONED)


def _read_sentence(sentence: str, keywords: re.Pattern[str]) -> Call:
    triggers = _triggers(sentence)
    calls = []
    for match in keywords.finditer(sentence):
        if any(t.start < match.end() and match.start() < t.end for t in triggers):
            continue  # part of a trigger phrase ("mass effect"), not a mention
        call = _mention_call(match.start(), match.end(), triggers)
        if call is not None:
            calls.append(call)
    return _strongest(calls)


def _read_passage(text: str, rule: FindingRule) -> Call:
    keywords = _keyword_re(rule.keywords)
    return _strongest(_read_sentence(s, keywords) for s in _SENTENCE_END.split(text))


def _sections(text: str) -> tuple[str, str]:
    """(impression, body): the text under IMPRESSION-like headers and the text that is
    neither there nor under a skipped header."""
    parts: dict[str, list[str]] = {"first": [], "body": [], "skipped": []}
    kind, position = "body", 0
    for header in _HEADER.finditer(text):
        parts[kind].append(text[position:header.start()])
        name = " ".join(header.group("name").lower().split())
        kind = ("first" if name in _SECTION_FIRST
                else "skipped" if name in _SECTION_SKIPPED else "body")
        position = header.end()
    parts[kind].append(text[position:])
    return "\n".join(parts["first"]), "\n".join(parts["body"])


def read_text(text: str, rule: FindingRule) -> Call:
    """The radiologist's call on `rule`'s finding in a report's text (see the module's
    docstring for how sections, negation and uncertainty are read)."""
    impression, body = _sections(text)
    call = _read_passage(impression, rule)
    return call if call is not Call.NOT_MENTIONED else _read_passage(body, rule)
