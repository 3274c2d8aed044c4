"""QA views counted in SQL: agreement per model, version and stratum, and drift.

Everything is counted by the database, so the views stay fast at a million results:

- agreement: `qa_observations LEFT JOIN qa_reads` with `SUM(CASE ...)` for the 2x2 cells
  and the AI's positives, `GROUP BY` finding (and stratum), one query per model version;
- drift: per window, one scan for counts, sums and sums of squares grouped by scanner
  model and kernel (n, mean, standard deviation, categorical shares), and one for
  histograms: `SUM(CASE WHEN x >= edge_i AND x < edge_i+1 ...)` columns over the
  baseline's edges, every measured column at once, grouped by scanner model.

Only two things come from a sample: the baseline's quantile edges and the p5/p50/p95 of
each window's `Summary`. The sample is at most `SAMPLE_ROWS` rows picked by a fixed
scramble of the row id (`(id * 40503) % 65536 < cut`), so its cost does not grow with
traffic, as fetching a whole window's column would, and it needs no sort, as
`ORDER BY ... OFFSET` per quantile would (nine sorts of the window for ten bins). Quantiles
of 20,000 values sit within about half a percentage point of rank of the true ones, far
finer than ten bins; the histograms themselves are exact counts over those edges.

Every query is restricted by `model_name = ? AND model_version = ? AND study_date
BETWEEN ? AND ?`, the prefix of the (model_name, model_version, study_date) index;
`plans` shows that both databases use it. Windows are inclusive study dates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import date, timedelta
from enum import Enum
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.datadict import tag_for_keyword
from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Executable,
    Select,
    and_,
    case,
    func,
    literal_column,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from radbridge.engine.models import QA_OBSERVATIONS, QA_READS
from radbridge.qa import metrics
from radbridge.qa.drift import (
    DriftThresholds,
    Judgement,
    KsResult,
    Summary,
    baseline_edges,
    categorical_psi,
    judge,
    ks_from_histograms,
    psi,
)
from radbridge.qa.errors import QaConfigError
from radbridge.qa.metrics import DEFAULT_MIN_GROUP, Agreement, Counts, Rate, wilson
from radbridge.qa.strata import DIMENSIONS, UNKNOWN

OBS = QA_OBSERVATIONS
READS = QA_READS
DIMENSION_COLUMNS = {"manufacturer": "manufacturer", "model": "scanner_model",
                     "station": "station", "site": "site", "sex": "sex",
                     "age_band": "age_band"}
"""`qa.strata` dimension -> qa_observations column ("model" is the scanner's model)."""
NUMERIC_INPUTS = ("kvp", "slice_thickness", "pixel_spacing", "pixel_mean", "pixel_std")
CATEGORICAL_INPUTS = ("kernel", "scanner_model")
MEASURED = ("score", *NUMERIC_INPUTS)
SAMPLE_ROWS = 20_000
_SCRAMBLE, _MODULUS = 40503, 65536
"""An odd multiplier modulo 2**16 permutes the ids' residues, so a cut on it samples
evenly even when one model's ids come in strides (round-robin writers, two findings)."""
DEFAULT_CURRENT_DAYS, DEFAULT_BASELINE_DAYS = 30, 90
_RANGE = re.compile(r"\s*(\d{4}-\d{2}-\d{2})\s*\.\.\s*(\d{4}-\d{2}-\d{2})\s*")
_DAYS = re.compile(r"\s*(\d{1,5})\s*d\s*")


# --- windows and scope ---------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Study dates from `start` to `end`, both included."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if not isinstance(self.start, date) or not isinstance(self.end, date):
            raise QaConfigError("window", "dates")
        if self.start > self.end:
            raise QaConfigError("window", f"a start on or before its end ({self})")

    @classmethod
    def parse(cls, text: str, name: str = "window") -> Window:
        """`FROM..TO` with ISO dates, such as 2026-01-01..2026-03-31."""
        found = _RANGE.fullmatch(text or "")
        if found is None:
            raise QaConfigError(name, f"FROM..TO with ISO dates such as "
                                      f"2026-01-01..2026-03-31, not {text[:40]!r}")
        try:
            start, end = (date.fromisoformat(part) for part in found.groups())
        except ValueError as exc:
            raise QaConfigError(name, f"real dates, not {text[:40]!r}") from exc
        if start > end:
            raise QaConfigError(name, f"a start on or before its end, not {text[:40]!r}")
        return cls(start, end)

    @classmethod
    def between(cls, since: date | None, until: date | None, today: date) -> Window | None:
        """--since/--until: either may be missing (the other end open to the past or to
        today); None when both are."""
        if since is None and until is None:
            return None
        end = until or today
        start = since or date.min
        if start > end:
            raise QaConfigError("since", f"a date on or before until ({end})")
        return cls(start, end)

    @classmethod
    def trailing(cls, text: str, today: date, name: str = "window") -> Window:
        """`90d`: the 90 days ending today."""
        found = _DAYS.fullmatch(text or "")
        if found is None or int(found.group(1)) < 1:
            raise QaConfigError(name, f"a number of days such as 90d, not {text[:20]!r}")
        return cls.last(int(found.group(1)), today)

    @classmethod
    def last(cls, days: int, end: date) -> Window:
        return cls(end - timedelta(days=days - 1), end)

    def clause(self) -> ColumnElement[bool]:
        return OBS.c.study_date.between(self.start, self.end)

    def as_json(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def drift_windows(today: date, baseline: Window | None = None,
                  current: Window | None = None) -> tuple[Window, Window]:
    """The windows a drift view compares when not given: the current 30 days ending today,
    the baseline the 90 days before the current window."""
    current = current or Window.last(DEFAULT_CURRENT_DAYS, today)
    baseline = baseline or Window.last(DEFAULT_BASELINE_DAYS, current.start - timedelta(days=1))
    return baseline, current


@dataclass(frozen=True)
class Finding:
    system: str
    code: str

    def as_json(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code}

    def __str__(self) -> str:
        return f"{self.system} {self.code}"


@dataclass(frozen=True)
class _Scope:
    """The rows of one model version (one finding of it), in one window."""

    model: str
    version: str
    window: Window | None
    finding: Finding | None = None

    def where(self) -> list[ColumnElement[bool]]:
        conditions = [OBS.c.model_name == self.model, OBS.c.model_version == self.version]
        if self.window is not None:
            conditions.append(self.window.clause())
        if self.finding is not None:
            conditions += [OBS.c.finding_system == self.finding.system,
                           OBS.c.finding_code == self.finding.code]
        return conditions


def model_versions(session: Session, model: str | None = None) -> list[tuple[str, str]]:
    """(model, version) pairs with observations, from the index alone."""
    statement = select(OBS.c.model_name, OBS.c.model_version).distinct()
    if model is not None:
        statement = statement.where(OBS.c.model_name == model)
    statement = statement.order_by(OBS.c.model_name, OBS.c.model_version)
    return [(str(name), str(version)) for name, version in session.execute(statement)]


def _versions(session: Session, model: str | None, version: str | None
              ) -> list[tuple[str, str]]:
    if model is not None and version is not None:
        return [(model, version)]
    return [pair for pair in model_versions(session, model) if version in (None, pair[1])]


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    """SUM(CASE WHEN condition THEN 1 ELSE 0 END), the 1 and 0 written inline: bound, they
    would reach PostgreSQL untyped and sum as numeric."""
    return func.sum(case((condition, literal_column("1")), else_=literal_column("0")))


# --- agreement -----------------------------------------------------------------------


@dataclass(frozen=True)
class AgreementRow:
    """One group: every AI result in the window (`n`, the AI's positive rate) and those
    with a radiologist's call (`agreement`, flagged small below min_group pairs)."""

    model: str
    version: str
    finding: Finding
    dimension: str | None
    group: str
    n: int
    positive_rate: Rate
    agreement: Agreement

    @property
    def small(self) -> bool:
        return self.agreement.small

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version,
                "finding": self.finding.as_json(), "dimension": self.dimension,
                "group": self.group, "n": self.n, "paired": self.agreement.counts.total,
                "small": self.small, "positive_rate": self.positive_rate.as_json(),
                "agreement": self.agreement.as_json()}


@dataclass(frozen=True)
class AgreementReport:
    window: Window | None
    dimension: str | None
    min_group: int
    confidence: float
    rows: tuple[AgreementRow, ...]

    def as_json(self) -> dict[str, Any]:
        return {"window": None if self.window is None else self.window.as_json(),
                "dimension": self.dimension, "min_group": self.min_group,
                "confidence": self.confidence, "rows": [row.as_json() for row in self.rows]}


def dimension_column(by: str | None) -> ColumnElement[Any] | None:
    """What a dimension groups by: a built-in `qa.strata` dimension's column, or, for a
    DICOM keyword (a site's `qa_strata`, e.g. ProtocolName), its value in the
    observation's `strata` ("unknown" where it was not kept); QaConfigError otherwise."""
    if by is None:
        return None
    if by in DIMENSION_COLUMNS:
        return OBS.c[DIMENSION_COLUMNS[by]]
    if tag_for_keyword(by) is not None:
        return func.coalesce(OBS.c.strata[by].as_string(), literal_column(f"'{UNKNOWN}'"))
    raise QaConfigError("by", f"one of {', '.join(DIMENSIONS)} or a DICOM keyword of the "
                              f"inference destination's qa_strata, not {by[:40]!r}")


def agreement_statement(model: str, version: str, window: Window | None,
                        by: str | None = None) -> Select[Any]:
    """Cells of the 2x2 table and the AI's positives per finding (and group)."""
    column = dimension_column(by)
    ai, rad = OBS.c.ai_positive, READS.c.radiologist_positive
    joined = OBS.outerjoin(READS, and_(
        READS.c.study_uid == OBS.c.study_uid, READS.c.finding_system == OBS.c.finding_system,
        READS.c.finding_code == OBS.c.finding_code, rad.is_not(None)))
    keys: list[ColumnElement[Any]] = [OBS.c.finding_system, OBS.c.finding_code]
    if column is not None:
        keys.append(column.label("grp"))
    yes, no = True, False
    return (select(*keys, func.count().label("n"), _count_if(ai.is_(yes)).label("ai_pos"),
                   _count_if(and_(ai.is_(yes), rad.is_(yes))).label("tp"),
                   _count_if(and_(ai.is_(yes), rad.is_(no))).label("fp"),
                   _count_if(and_(ai.is_(no), rad.is_(no))).label("tn"),
                   _count_if(and_(ai.is_(no), rad.is_(yes))).label("fn"))
            .select_from(joined).where(*_Scope(model, version, window).where())
            .group_by(*keys).order_by(*keys))


def agreement(session: Session, model: str | None = None, version: str | None = None,
              window: Window | None = None, by: str | None = None, *,
              min_group: int = DEFAULT_MIN_GROUP, confidence: float = 0.95) -> AgreementReport:
    """Agreement, its rates with Wilson intervals and the AI's positive rate, per model
    version and finding, optionally per group of one `qa.strata` dimension."""
    dimension_column(by)  # both check their settings before any query runs
    metrics.agreement(Counts(), min_group=min_group, confidence=confidence)
    rows: list[AgreementRow] = []
    for name, ver in _versions(session, model, version):
        for found in session.execute(agreement_statement(name, ver, window, by)).mappings():
            counts = Counts(tp=int(found["tp"]), fp=int(found["fp"]), tn=int(found["tn"]),
                            fn=int(found["fn"]))
            n = int(found["n"])
            rows.append(AgreementRow(
                model=name, version=ver,
                finding=Finding(found["finding_system"], found["finding_code"]),
                dimension=by, group=str(found["grp"]) if by is not None else "all", n=n,
                positive_rate=wilson(int(found["ai_pos"]), n, confidence),
                agreement=metrics.agreement(counts, min_group=min_group,
                                            confidence=confidence)))
    return AgreementReport(window, by, min_group, confidence, tuple(rows))


# --- drift: what is counted per window -----------------------------------------------


def profile_statement(scope: _Scope) -> Select[Any]:
    """n, and count, sum and sum of squares of each measured column, per finding,
    scanner model and kernel (categorical counts come from the same rows)."""
    keys = [OBS.c.finding_system, OBS.c.finding_code, OBS.c.scanner_model, OBS.c.kernel]
    moments: list[ColumnElement[Any]] = [func.count().label("n")]
    for name in MEASURED:
        column = OBS.c[name]
        moments += [func.count(column).label(f"{name}__n"), func.sum(column).label(f"{name}__s"),
                    func.sum(column * column).label(f"{name}__q")]
    return select(*keys, *moments).where(*scope.where()).group_by(*keys)


def sample_statement(scope: _Scope, rows: int) -> Select[Any]:
    """The measured columns of about SAMPLE_ROWS of the scope's `rows` rows."""
    statement = select(*(OBS.c[name] for name in MEASURED)).where(*scope.where())
    if rows > SAMPLE_ROWS:
        cut = math.ceil(_MODULUS * SAMPLE_ROWS / rows)
        statement = statement.where((OBS.c.id * _SCRAMBLE) % _MODULUS < cut)
    return statement


def histogram_statement(scope: _Scope, edges: Mapping[str, Sequence[float]]) -> Select[Any]:
    """Per scanner model: rows, and counts per bin of each column with edges (bin i holds
    edges[i-1] <= x < edges[i], the outer bins open), as `qa.drift.histogram` bins."""
    columns: list[ColumnElement[Any]] = [func.count().label("n")]
    for name, inner in edges.items():
        columns += [_count_if(test).label(f"{name}__{index}")
                    for index, test in enumerate(_bins(OBS.c[name], inner))]
    return (select(OBS.c.scanner_model, *columns).where(*scope.where())
            .group_by(OBS.c.scanner_model).order_by(OBS.c.scanner_model))


def _bins(x: ColumnElement[Any], inner: Sequence[float]) -> list[ColumnElement[bool]]:
    """One test per bin: below the first edge, between two edges, from the last one up."""
    tests = [x < inner[0]]
    tests += [and_(x >= low, x < high) for low, high in pairwise(inner)]
    return [*tests, x >= inner[-1]]


@dataclass
class _Moments:
    count: int = 0
    total: float = 0.0
    squares: float = 0.0


@dataclass
class _Profile:
    """One window of one finding: what the profile and sample queries found."""

    n: int = 0
    moments: dict[str, _Moments] = field(default_factory=lambda: {m: _Moments() for m in MEASURED})
    categories: dict[str, dict[str, int]] = field(
        default_factory=lambda: {c: {} for c in CATEGORICAL_INPUTS})
    sample: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def add(self, row: Mapping[Any, Any]) -> None:
        n = int(row["n"])
        self.n += n
        for name in MEASURED:
            moments = self.moments[name]
            moments.count += int(row[f"{name}__n"])
            moments.total += float(row[f"{name}__s"] or 0.0)
            moments.squares += float(row[f"{name}__q"] or 0.0)
        for name in CATEGORICAL_INPUTS:
            label = row[name] if row[name] is not None else UNKNOWN
            self.categories[name][label] = self.categories[name].get(label, 0) + n

    def summary(self, name: str) -> Summary:
        """Exact n, missing, mean and standard deviation; percentiles from the sample."""
        m = self.moments[name]
        if m.count == 0:
            return Summary(0, None, None, None, None, None, self.n)
        mean = m.total / m.count
        std = (math.sqrt(max(m.squares - m.total * mean, 0.0) / (m.count - 1))
               if m.count > 1 else None)
        values = self.sample.get(name, np.empty(0))
        if values.size == 0:
            return Summary(m.count, mean, std, None, None, None, self.n - m.count)
        p5, p50, p95 = (float(q) for q in np.quantile(values, (0.05, 0.5, 0.95)))
        return Summary(m.count, mean, std, p5, p50, p95, self.n - m.count)


def _profiles(session: Session, scope: _Scope) -> dict[Finding, _Profile]:
    found: dict[Finding, _Profile] = {}
    for row in session.execute(profile_statement(scope)).mappings():
        key = Finding(row["finding_system"], row["finding_code"])
        found.setdefault(key, _Profile()).add(row)
    return found


def _take_sample(session: Session, scope: _Scope, profile: _Profile) -> None:
    rows = [tuple(row) for row in session.execute(sample_statement(scope, profile.n))]
    # NumPy reads None as NaN in a float array (plain tuples: it reads Rows one by one).
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(MEASURED))
    for index, name in enumerate(MEASURED):
        column = table[:, index]
        profile.sample[name] = column[~np.isnan(column)]


_Histograms = dict[str, dict[str, list[int]]]
"""scanner model -> column -> counts per bin; "" holds every scanner together."""


def _histograms(session: Session, scope: _Scope,
                edges: Mapping[str, Sequence[float]]) -> _Histograms:
    found: _Histograms = {}
    if not edges:
        return found
    for row in session.execute(histogram_statement(scope, edges)).mappings():
        for scanner in ("", str(row["scanner_model"])):
            counts = found.setdefault(scanner, {})
            for name, inner in edges.items():
                bins = [int(row[f"{name}__{i}"]) for i in range(len(inner) + 1)]
                old = counts.get(name, [0] * len(bins))
                counts[name] = [a + b for a, b in zip(old, bins, strict=True)]
    return found


# --- drift: results --------------------------------------------------------------------


def _json(value: Any) -> Any:
    """Dataclasses, enums, dates and tuples as JSON values, field by field."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json(item) for key, item in value.items()}
    return value


class _AsJson:
    """`as_json` for the drift dataclasses: every field, as _json writes it."""

    def as_json(self) -> dict[str, Any]:
        return dict(_json(self))


@dataclass(frozen=True)
class NumericDrift(_AsJson):
    """One numeric column (the score, kVp, slice thickness ...) in both windows: its
    summaries, the counts per baseline bin, PSI, KS and the verdict (None when a window
    has no values to compare); `small` when a window holds fewer than min_group."""

    name: str
    baseline: Summary
    current: Summary
    edges: tuple[float, ...]
    baseline_counts: tuple[int, ...]
    current_counts: tuple[int, ...]
    psi: float | None
    ks: KsResult | None
    judgement: Judgement | None
    small: bool

    @property
    def sizes(self) -> tuple[int, int]:
        return self.baseline.n, self.current.n



@dataclass(frozen=True)
class CategoricalDrift(_AsJson):
    """Rows per category (kernel, scanner model) in both windows; a category seen in one
    window only counts as drift."""

    name: str
    baseline: dict[str, int]
    current: dict[str, int]
    psi: float | None
    judgement: Judgement | None
    small: bool
    ks: None = None

    @property
    def sizes(self) -> tuple[int, int]:
        return sum(self.baseline.values()), sum(self.current.values())



@dataclass(frozen=True)
class ScannerDrift(_AsJson):
    """The score's drift on one scanner model, over the model's baseline edges, so that
    a shift on one scanner shows even when the others dilute it overall."""

    scanner_model: str
    n_baseline: int
    n_current: int
    psi: float | None
    ks: KsResult | None
    judgement: Judgement | None
    small: bool

    @property
    def sizes(self) -> tuple[int, int]:
        return self.n_baseline, self.n_current


Compared = NumericDrift | CategoricalDrift | ScannerDrift


@dataclass(frozen=True)
class DriftReport:
    """One finding of one model version, current window against baseline window."""

    model: str
    version: str
    finding: Finding
    baseline: Window
    current: Window
    score: NumericDrift
    inputs: tuple[NumericDrift, ...]
    categories: tuple[CategoricalDrift, ...]
    scanners: tuple[ScannerDrift, ...]

    def measures(self) -> list[tuple[str, Compared]]:
        """Every judged comparison, named as alerts key it: "score", "input:kvp",
        "input:kernel", "scanner:NAME"."""
        named: list[tuple[str, Compared]] = [("score", self.score)]
        named += [(f"input:{item.name}", item) for item in self.inputs]
        named += [(f"input:{item.name}", item) for item in self.categories]
        named += [(f"scanner:{item.scanner_model}", item) for item in self.scanners]
        return [(name, item) for name, item in named if item.judgement is not None]

    def as_json(self, *, scanners: bool = True) -> dict[str, Any]:
        document = dict(_json(self))
        if not scanners:
            del document["scanners"]
        return document


# --- drift: computing ------------------------------------------------------------------


@dataclass(frozen=True)
class DriftOptions:
    """Bins of the baseline's quantiles, the thresholds of `judge`, and the size below
    which a window is flagged small."""

    bins: int = 10
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    min_group: int = DEFAULT_MIN_GROUP

    def __post_init__(self) -> None:
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) \
                or not 2 <= self.bins <= 100:
            raise QaConfigError("bins", "an integer from 2 to 100")
        if isinstance(self.min_group, bool) or not isinstance(self.min_group, int) \
                or self.min_group < 0:
            raise QaConfigError("min_group", "an integer >= 0")


def drift(session: Session, model: str, version: str | None, baseline: Window,
          current: Window, options: DriftOptions | None = None) -> tuple[DriftReport, ...]:
    """Score, input and per-scanner drift of each finding of each version of `model`
    (or of `version` only), current window against baseline window."""
    settings = options or DriftOptions()
    reports: list[DriftReport] = []
    for name, ver in _versions(session, model, version):
        before = _profiles(session, _Scope(name, ver, baseline))
        after = _profiles(session, _Scope(name, ver, current))
        for finding in sorted(set(before) | set(after), key=str):
            profiles = (before.get(finding, _Profile()), after.get(finding, _Profile()))
            reports.append(_finding_drift(session, _Scope(name, ver, None, finding),
                                          (baseline, current), profiles, settings))
    return tuple(reports)


def _finding_drift(session: Session, key: _Scope, windows: tuple[Window, Window],
                   profiles: tuple[_Profile, _Profile], options: DriftOptions) -> DriftReport:
    """One finding: sample both windows, fix the edges, count both histograms, judge."""
    scopes = [replace(key, window=window) for window in windows]
    for scope, profile in zip(scopes, profiles, strict=True):
        if profile.n:
            _take_sample(session, scope, profile)
    base, now = profiles
    edges = {name: edges_of(base.sample[name], options.bins)
             for name in MEASURED if base.sample.get(name, np.empty(0)).size}
    if "score" in edges:
        edges["score"] = score_edges(options.bins)
    before, after = (_histograms(session, scope, edges) for scope in scopes)
    numeric = {name: _numeric(name, profiles, edges.get(name, ()), before.get("", {}),
                              after.get("", {}), options) for name in MEASURED}
    return DriftReport(
        model=key.model, version=key.version, finding=key.finding or Finding("", ""),
        baseline=windows[0], current=windows[1], score=numeric["score"],
        inputs=tuple(numeric[name] for name in NUMERIC_INPUTS),
        categories=tuple(_categorical(name, base, now, options)
                         for name in CATEGORICAL_INPUTS),
        scanners=_scanners(edges.get("score", ()), before, after, options))


def score_edges(bins: int) -> tuple[float, ...]:
    """Equal-width bins over [0, 1] for the model's score. A probability, unlike an input
    parameter, has a fixed range, and a well-separating model saturates near 0 and 1:
    baseline quantiles there are hair-thin bins a few 1e-5 apart, in which chance moves
    alone make PSI huge (measured: 1.65 on 24 unchanged studies)."""
    return tuple(index / bins for index in range(1, bins))


def edges_of(baseline: npt.NDArray[np.float64], bins: int) -> tuple[float, ...]:
    """The baseline's quantile edges; for a column of a few repeated values (slice
    thickness, kVp: at most `bins` of them, each seen five times on average) a bin for
    each value and one for each gap between and beyond them, since merged quantiles
    would put 1 mm and 5 mm slices in the same top bin."""
    distinct = np.unique(baseline)
    if distinct.size > bins or baseline.size < 5 * distinct.size:
        return baseline_edges(baseline, bins)
    return tuple(float(edge) for value in distinct
                 for edge in (value, np.nextafter(value, math.inf)))


def _numeric(name: str, profiles: tuple[_Profile, _Profile], edges: Sequence[float],
             before: Mapping[str, list[int]], after: Mapping[str, list[int]],
             options: DriftOptions) -> NumericDrift:
    baseline, current = (profile.summary(name) for profile in profiles)
    counts_before = tuple(before.get(name, ()))
    counts_after = tuple(after.get(name, [0] * len(counts_before)))
    index, ks = _compare(edges, counts_before, counts_after)
    return NumericDrift(
        name, baseline, current, tuple(edges), counts_before, counts_after, index, ks,
        None if index is None else judge(index, ks, options.thresholds),
        min(baseline.n, current.n) < options.min_group)


def _compare(edges: Sequence[float], before: Sequence[int], after: Sequence[int]
             ) -> tuple[float | None, KsResult | None]:
    """PSI and KS of two histograms; (None, None) when either window has nothing."""
    if not before or sum(before) == 0 or sum(after) == 0:
        return None, None
    return psi(before, after), ks_from_histograms(edges, before, after)


def _categorical(name: str, base: _Profile, now: _Profile,
                 options: DriftOptions) -> CategoricalDrift:
    before = dict(sorted(base.categories[name].items()))
    after = dict(sorted(now.categories[name].items()))
    index = categorical_psi(before, after) if base.n and now.n else None
    return CategoricalDrift(
        name, before, after, index,
        None if index is None else judge(index, None, options.thresholds),
        min(base.n, now.n) < options.min_group)


def _scanners(edges: Sequence[float], before: _Histograms, after: _Histograms,
              options: DriftOptions) -> tuple[ScannerDrift, ...]:
    rows = []
    empty = [0] * (len(edges) + 1)
    for scanner in sorted((set(before) | set(after)) - {""}):
        counts_before = before.get(scanner, {}).get("score", empty)
        counts_after = after.get(scanner, {}).get("score", empty)
        index, ks = _compare(edges, counts_before, counts_after)
        n_before, n_after = sum(counts_before), sum(counts_after)
        rows.append(ScannerDrift(
            scanner, n_before, n_after, index, ks,
            None if index is None else judge(index, ks, options.thresholds),
            min(n_before, n_after) < options.min_group))
    return tuple(rows)


# --- query plans -------------------------------------------------------------------------


class _Explain(Executable, ClauseElement):
    """EXPLAIN (PostgreSQL) or EXPLAIN QUERY PLAN (SQLite) of a statement, binds and all."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if compiler.dialect.name == "sqlite" else "EXPLAIN "
    return prefix + compiler.process(element.statement, **kw)


def explain(session: Session, statement: Select[Any]) -> str:
    """The database's plan of `statement`, one line per step."""
    return "\n".join(str(row[-1]) for row in session.execute(_Explain(statement)))


def plans(session: Session, model: str, version: str, window: Window) -> dict[str, str]:
    """The plans of the main queries over one window (each should name the index)."""
    scope = _Scope(model, version, window)
    first = session.execute(select(OBS.c.finding_system, OBS.c.finding_code)
                            .where(*scope.where()).limit(1)).first()
    one = Finding(*first) if first is not None else Finding("SCT", "0")
    edges = {name: (0.5,) for name in MEASURED}
    statements: Iterable[tuple[str, Select[Any]]] = (
        ("agreement", agreement_statement(model, version, window)),
        ("agreement_by_scanner", agreement_statement(model, version, window, "model")),
        ("profile", profile_statement(scope)),
        ("sample", sample_statement(_Scope(model, version, window, one), SAMPLE_ROWS * 10)),
        ("histogram", histogram_statement(_Scope(model, version, window, one), edges)))
    return {name: explain(session, statement) for name, statement in statements}
