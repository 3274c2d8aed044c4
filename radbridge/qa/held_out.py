"""A held-out set for `radbridge qa evaluate`: a folder of DICOM studies in any layout
(files grouped by the StudyInstanceUID in their headers) and a labels CSV with one row
per study and finding: `study_uid` (or `accession`, matched to AccessionNumber),
`finding` (the code of a card's finding), `label` (1/0, positive/negative, true/false);
any other column is a stratum (site, reader, ...) reported verbatim, so identifying
columns are refused. Every problem is reported at once, with file, line and column.

    EvaluationError      the evaluation could not run (a backend down, nothing to run)
    └── HeldOutError     the held-out set is wrong: every problem with file, line, column
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from radbridge.errors import RadbridgeError
from radbridge.inference.offline import FolderStudy, read_folder
from radbridge.mappings.dicom.values import text
from radbridge.qa.strata import group_value

STUDY_COLUMN, ACCESSION_COLUMN, FINDING_COLUMN, LABEL_COLUMN = (
    "study_uid", "accession", "finding", "label")
LABEL_WORDS = {"1": True, "positive": True, "true": True,
               "0": False, "negative": False, "false": False}
IDENTIFYING_COLUMNS = frozenset({
    "patient_id", "patientid", "patient_name", "patientname", "name", "mrn",
    "birth_date", "birthdate", "patient_birth_date", "dob", "date_of_birth"})
"""Extra columns that would carry identifiers into the report: refused."""
MAX_PROBLEMS = 50
HEADER_STRATA = ("manufacturer", "model", "station", "sex", "age_band")
"""The built-in breakdowns, read from the DICOM header (the names `qa.strata` uses)."""


class EvaluationError(RadbridgeError):
    """The evaluation could not run: a backend is down or refuses a card, nothing to run."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the held-out set; `line` 1 is the CSV's header."""

    message: str
    line: int | None = None
    column: str | None = None


class HeldOutError(EvaluationError):
    """The labels CSV or the study folder is unusable; `problems` lists what and where."""

    def __init__(self, file: Path, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = tuple(problems)
        super().__init__("\n".join(_where(file, p) for p in self.problems))


def _where(file: Path, problem: Problem) -> str:
    line = f":{problem.line}" if problem.line is not None else ""
    column = f" column {problem.column}:" if problem.column else ""
    return f"{file}{line}:{column} {problem.message}"


# ---- the held-out set -------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """One labels row, matched to a study of the folder."""

    line: int
    study_uid: str
    finding: str
    positive: bool
    extra: tuple[tuple[str, str], ...] = ()
    """The row's stratum columns (name, value), in the CSV's order."""


@dataclass(frozen=True)
class HeldOutStudy:
    study_uid: str
    accession: str | None
    files: FolderStudy
    """Its series and their routing facts, as `inference.offline.read_folder` gives them."""
    headers: Mapping[str, Dataset]
    """One header per series (no pixels): equipment, acquisition and patient facts."""


@dataclass(frozen=True)
class HeldOutSet:
    folder: Path
    labels_file: Path
    studies: Mapping[str, HeldOutStudy]
    labels: tuple[Label, ...]
    extra_columns: tuple[str, ...]


@dataclass(frozen=True)
class _Row:
    line: int
    study_uid: str | None
    accession: str | None
    finding: str
    positive: bool
    extra: tuple[tuple[str, str], ...]


def load_held_out(folder: Path, labels_file: Path, known_findings: Collection[str]
                  ) -> HeldOutSet:
    """The folder's studies and the labels matched to them. HeldOutError lists every bad
    row, label without its study, duplicate (study, finding) and finding no card has."""
    rows, extra_columns = _read_rows(labels_file, known_findings)
    studies = read_studies(folder)
    by_accession: dict[str, list[str]] = {}
    for study in studies.values():
        if study.accession:
            by_accession.setdefault(study.accession, []).append(study.study_uid)
    problems: list[Problem] = []
    labels: list[Label] = []
    first_line: dict[tuple[str, str], int] = {}
    for row in rows:
        uid = _study_of(row, studies, by_accession, problems)
        if uid is None:
            continue
        key = (uid, row.finding)
        if key in first_line:
            problems.append(Problem(f"study {uid} has a label for {row.finding} already "
                                    f"(line {first_line[key]})", row.line, FINDING_COLUMN))
            continue
        first_line[key] = row.line
        labels.append(Label(row.line, uid, row.finding, row.positive, row.extra))
    if problems:
        raise HeldOutError(labels_file, problems[:MAX_PROBLEMS])
    return HeldOutSet(folder, labels_file, studies, tuple(labels), extra_columns)


def _study_of(row: _Row, studies: Mapping[str, HeldOutStudy],
              by_accession: Mapping[str, list[str]], problems: list[Problem]) -> str | None:
    if row.study_uid is not None:
        if row.study_uid in studies:
            return row.study_uid
        problems.append(Problem(f"no study {row.study_uid} in the folder", row.line,
                                STUDY_COLUMN))
        return None
    matches = by_accession.get(row.accession or "", [])
    if len(matches) == 1:
        return matches[0]
    problems.append(Problem(f"{len(matches)} studies in the folder have accession "
                            f"{row.accession}" if matches else
                            f"no study with accession {row.accession} in the folder",
                            row.line, ACCESSION_COLUMN))
    return None


def _read_rows(path: Path, known_findings: Collection[str]
               ) -> tuple[list[_Row], tuple[str, ...]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            header = [name.strip() for name in next(reader, [])]
            columns = _check_header(path, header)
            problems: list[Problem] = []
            rows = [row for cells in reader
                    if any(c.strip() for c in cells)
                    and (row := _parse_row(reader.line_num, header, cells, columns,
                                           known_findings, problems)) is not None]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HeldOutError(path, [Problem(f"cannot read the labels: {exc}")]) from exc
    if problems:
        raise HeldOutError(path, problems[:MAX_PROBLEMS])
    if not rows:
        raise HeldOutError(path, [Problem("no labels (only a header, or empty)")])
    return rows, tuple(header[i] for i in columns)


def _check_header(path: Path, header: list[str]) -> list[int]:
    """The indexes of the stratum columns; HeldOutError for a header that cannot work."""
    lowered = [name.lower() for name in header]
    problems = [Problem(f"no {name} column (columns: {', '.join(header) or 'none'})", 1)
                for name in (FINDING_COLUMN, LABEL_COLUMN) if name not in lowered]
    if STUDY_COLUMN not in lowered and ACCESSION_COLUMN not in lowered:
        problems.append(Problem(f"needs a {STUDY_COLUMN} or an {ACCESSION_COLUMN} column", 1))
    seen: set[str] = set()
    for name in lowered:
        if name in seen:
            problems.append(Problem("appears twice in the header", 1, name))
        seen.add(name)
        if name in IDENTIFYING_COLUMNS:
            problems.append(Problem("identifies the patient; the report would carry it, "
                                    "leave it out of the labels", 1, name))
        if not name:
            problems.append(Problem("a column without a name", 1))
        if name in HEADER_STRATA:
            problems.append(Problem("is a stratum read from the DICOM headers; rename the "
                                    "column", 1, name))
    if problems:
        raise HeldOutError(path, problems)
    keys = {STUDY_COLUMN, ACCESSION_COLUMN, FINDING_COLUMN, LABEL_COLUMN}
    return [i for i, name in enumerate(lowered) if name not in keys]


def _parse_row(line: int, header: list[str], cells: list[str], extra: list[int],
               known_findings: Collection[str], problems: list[Problem]) -> _Row | None:
    if len(cells) != len(header):
        problems.append(Problem(f"{len(cells)} cells, the header has {len(header)}", line))
        return None
    values = {name.lower(): cell.strip() for name, cell in zip(header, cells, strict=True)}
    before = len(problems)
    study_uid = values.get(STUDY_COLUMN) or None
    accession = values.get(ACCESSION_COLUMN) or None
    if study_uid is None and accession is None:
        column = STUDY_COLUMN if STUDY_COLUMN in values else ACCESSION_COLUMN
        problems.append(Problem("empty: the row names no study", line, column))
    finding = values[FINDING_COLUMN]
    if finding not in known_findings:
        problems.append(Problem(f"{finding!r} is no finding of any model card (known: "
                                f"{', '.join(sorted(known_findings)) or 'none'})",
                                line, FINDING_COLUMN))
    positive = LABEL_WORDS.get(values[LABEL_COLUMN].lower())
    if positive is None:
        problems.append(Problem(f"{values[LABEL_COLUMN]!r} is not 1/0, positive/negative "
                                "or true/false", line, LABEL_COLUMN))
    if len(problems) > before or positive is None:
        return None
    strata = tuple((header[i], group_value(cells[i])) for i in extra)
    return _Row(line, study_uid, accession, finding, positive, strata)


def read_studies(folder: Path) -> dict[str, HeldOutStudy]:
    """The DICOM studies under `folder` by StudyInstanceUID (headers only); files that
    are not DICOM are skipped, as `radbridge infer` skips them."""
    if not folder.is_dir():
        raise HeldOutError(folder, [Problem("not a folder")])
    whole = read_folder(folder)
    series_of: dict[str, list[str]] = {}
    headers: dict[str, Dataset] = {}
    for series_uid, paths in whole.series.items():
        header = _header(paths[0])
        study_uid = text(header, "StudyInstanceUID") if header is not None else None
        if header is not None and study_uid:
            series_of.setdefault(study_uid, []).append(series_uid)
            headers[series_uid] = header
    if not series_of:
        raise HeldOutError(folder, [Problem("no DICOM study in the folder")])
    facts = {f.series_uid: f for f in whole.facts}
    return {uid: HeldOutStudy(
        uid, text(headers[series[0]], "AccessionNumber"),
        FolderStudy({s: whole.series[s] for s in series}, [facts[s] for s in series]),
        {s: headers[s] for s in series}) for uid, series in series_of.items()}


def _header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError):
        return None
