"""QA views counted in SQL, on SQLite and PostgreSQL, against tables counted by hand.

Rows are written directly (`add_rows`): one inference run per observation, and a
radiologist's read when the row says so, so these tests do not depend on the pipeline.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import text

from radbridge.engine.db import Database
from radbridge.engine.models import InferenceRun, QaObservation, QaRead
from radbridge.engine.qa import queries
from radbridge.engine.qa.queries import DriftOptions, Window
from radbridge.qa.drift import DriftVerdict, baseline_edges, histogram, psi
from radbridge.qa.errors import QaConfigError
from radbridge.qa.metrics import Counts, wilson

MODEL, VERSION = "ich-ct", "1.0"
ABSENT = "absent"
"""`Obs.read` for a study with no report yet (no qa_reads row)."""
_UIDS = itertools.count(1)


@dataclass(frozen=True)
class Obs:
    """One observation with chosen values; `read` is the radiologist's call: True,
    False, None (a read left out of the table, e.g. uncertain) or ABSENT."""

    day: date
    ai: bool = False
    read: bool | str | None = ABSENT
    score: float = 0.5
    scanner: str = "Scanner-A"
    manufacturer: str = "Acme"
    model: str = MODEL
    version: str = VERSION
    kvp: float | None = 120.0
    slice_thickness: float | None = 1.0
    kernel: str | None = "STANDARD"
    pixel_mean: float | None = 0.0
    strata: tuple[tuple[str, str], ...] = ()
    """The site's configured strata (keyword, value) of the observation."""


def add_rows(database: Database, rows: Iterable[Obs]) -> None:
    """Each row as an inference run, its observation and (unless ABSENT) its read."""
    with database.write() as session:
        for obs in rows:
            uid = f"1.2.826.0.1.3680043.{next(_UIDS)}"
            run = InferenceRun(
                study_uid=uid, study_version=1, model_name=obs.model, model_version=obs.version,
                card_sha256="0" * 64, device_identifier="test", demonstration=True,
                backend="onnxruntime", status="done")
            session.add(run)
            session.flush()
            session.add(QaObservation(
                run_id=run.id, study_uid=uid, model_name=obs.model, model_version=obs.version,
                finding_code="274100004", finding_system="SCT", score=obs.score,
                ai_positive=obs.ai, threshold=0.5, study_date=obs.day,
                manufacturer=obs.manufacturer, scanner_model=obs.scanner, station="CT1",
                site="General", sex="female", age_band="40-64", kvp=obs.kvp,
                slice_thickness=obs.slice_thickness, pixel_spacing=0.5, kernel=obs.kernel,
                pixel_mean=obs.pixel_mean, pixel_std=1.0, strata=dict(obs.strata)))
            if obs.read != ABSENT:
                session.add(QaRead(
                    study_uid=uid, finding_code="274100004", finding_system="SCT",
                    call="uncertain" if obs.read is None else
                    ("positive" if obs.read else "negative"),
                    radiologist_positive=obs.read, source="coded", report_status="F",
                    reported_at=datetime(2026, 3, 1, tzinfo=UTC)))


# --- agreement -------------------------------------------------------------------------

IN_WINDOW, BEFORE = date(2026, 2, 10), date(2025, 12, 31)
FEBRUARY = Window(date(2026, 2, 1), date(2026, 2, 28))


def _table(day: date, scanner: str, tp: int, fp: int, tn: int, fn: int, *,
           manufacturer: str = "Acme", model: str = MODEL) -> list[Obs]:
    """A 2x2 table as rows: tp studies both call positive, fp only the AI, and so on."""
    base = Obs(day, scanner=scanner, manufacturer=manufacturer, model=model)
    cells = ((True, True, tp), (True, False, fp), (False, False, tn), (False, True, fn))
    return [replace(base, ai=ai, read=read) for ai, read, count in cells for _ in range(count)]


@pytest.fixture
def agreement_rows(database: Database) -> Database:
    """Scanner-A (Acme): tp 3, fp 1, tn 4, fn 2, and two studies not yet reported (AI +
    and -). Scanner-B (Beta): tp 1, tn 2, and an uncertain read (AI +). Outside the window:
    two more tp on A; in the window, one tp of another model."""
    add_rows(database, [
        *_table(IN_WINDOW, "Scanner-A", 3, 1, 4, 2),
        Obs(IN_WINDOW, ai=True), Obs(IN_WINDOW, ai=False),
        *_table(IN_WINDOW, "Scanner-B", 1, 0, 2, 0, manufacturer="Beta"),
        Obs(IN_WINDOW, ai=True, read=None, scanner="Scanner-B", manufacturer="Beta"),
        *_table(BEFORE, "Scanner-A", 2, 0, 0, 0),
        *_table(IN_WINDOW, "Scanner-A", 1, 0, 0, 0, model="pe-ctpa"),
    ])
    return database


def test_agreement_per_scanner_counts_each_2x2_table(agreement_rows: Database) -> None:
    with agreement_rows.read() as session:
        report = queries.agreement(session, MODEL, VERSION, FEBRUARY, "model", min_group=5)
    a, b = report.rows
    assert (a.group, a.n, a.agreement.counts.total, a.small) == ("Scanner-A", 12, 10, False)
    assert (a.agreement.counts.tp, a.agreement.counts.fp, a.agreement.counts.tn,
            a.agreement.counts.fn) == (3, 1, 4, 2)
    assert a.agreement.sensitivity.value == pytest.approx(3 / 5)
    assert a.agreement.specificity.value == pytest.approx(4 / 5)
    assert a.agreement.ppv.value == pytest.approx(3 / 4)
    assert a.agreement.npv.value == pytest.approx(4 / 6)
    assert a.agreement.agreement == wilson(7, 10)
    assert a.positive_rate == wilson(5, 12)
    assert (b.group, b.n, b.agreement.counts.total, b.small) == ("Scanner-B", 4, 3, True)
    assert (b.agreement.counts.tp, b.agreement.counts.fp, b.agreement.counts.tn,
            b.agreement.counts.fn) == (1, 0, 2, 0)
    assert b.positive_rate == wilson(2, 4)
    assert b.agreement.ppv.value == 1.0 and b.agreement.sensitivity.value == 1.0


def test_agreement_overall_and_by_manufacturer(agreement_rows: Database) -> None:
    with agreement_rows.read() as session:
        (overall,) = queries.agreement(session, MODEL, VERSION, FEBRUARY, min_group=5).rows
        by_maker = queries.agreement(session, MODEL, None, FEBRUARY, "manufacturer").rows
    counts = overall.agreement.counts
    assert (overall.group, overall.n, counts.tp, counts.fp, counts.tn, counts.fn) == (
        "all", 16, 4, 1, 6, 2)
    assert overall.positive_rate == wilson(7, 16)
    assert overall.agreement.sensitivity.value == pytest.approx(4 / 6)
    assert overall.agreement.kappa == pytest.approx((10 / 13 - (5 * 6 + 8 * 7) / 169)
                                                    / (1 - (5 * 6 + 8 * 7) / 169))
    assert [(r.group, r.n, r.small) for r in by_maker] == [("Acme", 12, True),
                                                          ("Beta", 4, True)]


def test_agreement_respects_the_window_and_the_model(agreement_rows: Database) -> None:
    with agreement_rows.read() as session:
        (all_time,) = queries.agreement(session, MODEL, VERSION).rows
        everything = queries.agreement(session, None, None, FEBRUARY).rows
        any_model_v2 = queries.agreement(session, None, "2.0", FEBRUARY).rows
        before = queries.agreement(session, MODEL, VERSION,
                                   Window(date(2025, 12, 1), date(2025, 12, 31))).rows
    assert (all_time.n, all_time.agreement.counts.tp) == (18, 6)
    assert [(r.model, r.n) for r in everything] == [("ich-ct", 16), ("pe-ctpa", 1)]
    assert any_model_v2 == ()
    assert [(r.n, r.agreement.counts.tp) for r in before] == [(2, 2)]


def test_agreement_rejects_unknown_settings(database: Database) -> None:
    with database.read() as session:
        with pytest.raises(QaConfigError, match="by"):
            queries.agreement(session, MODEL, by="scanner")
        with pytest.raises(QaConfigError, match="confidence"):
            queries.agreement(session, MODEL, confidence=1.5)


def test_agreement_json_carries_the_flags_and_intervals(agreement_rows: Database) -> None:
    with agreement_rows.read() as session:
        document = queries.agreement(session, MODEL, VERSION, FEBRUARY, "model",
                                     min_group=5).as_json()
    assert document["window"] == {"start": "2026-02-01", "end": "2026-02-28"}
    row = document["rows"][1]
    assert (row["group"], row["n"], row["paired"], row["small"]) == ("Scanner-B", 4, 3, True)
    assert row["finding"] == {"system": "SCT", "code": "274100004"}
    assert row["agreement"]["counts"] == {"tp": 1, "fp": 0, "tn": 2, "fn": 0, "total": 3}


# --- drift -----------------------------------------------------------------------------

JANUARY = Window(date(2026, 1, 1), date(2026, 1, 31))
MARCH = Window(date(2026, 3, 1), date(2026, 3, 31))
STABLE, SHIFTED = "Stable-1", "Shift-2"


def _days(window: Window) -> Iterator[date]:
    span = (window.end - window.start).days + 1
    return (window.start + timedelta(days=i % span) for i in itertools.count())


def drift_rows(baseline: Window, current: Window, model: str = MODEL) -> list[Obs]:
    """Stable-1: 400 studies a window, scores spread evenly over (0, 1), the same in
    both. Shift-2: 40 a window, spread over (0, 1) in the baseline and over (0.7, 1) in the
    current window, where it also has 5 mm slices (1 mm before) and kernel BONE. No kVp.
    pixel_mean takes 100 values evenly in both windows."""
    rows = []
    for window in (baseline, current):
        days = _days(window)
        for i in range(400):
            rows.append(Obs(next(days), score=(i + 0.5) / 400, scanner=STABLE, model=model,
                            kvp=None, pixel_mean=(i * 37 % 100) / 100))
        shifted = window == current
        for i in range(40):
            rows.append(Obs(next(days), score=(0.7 + 0.3 * (i + 0.5) / 40) if shifted
                            else (i + 0.5) / 40, scanner=SHIFTED, model=model, kvp=None,
                            slice_thickness=5.0 if shifted else 1.0,
                            kernel="BONE" if shifted else "STANDARD",
                            pixel_mean=(i * 37 % 100) / 100))
    return rows


def _scores(rows: list[Obs], window: Window, scanner: str | None = None) -> list[float]:
    return [r.score for r in rows if window.start <= r.day <= window.end
            and scanner in (None, r.scanner)]


@pytest.fixture
def drifted(database: Database) -> list[Obs]:
    rows = drift_rows(JANUARY, MARCH)
    outside = [Obs(date(2026, 2, 15), score=0.99, slice_thickness=9.0, scanner=STABLE)] * 50
    add_rows(database, rows + outside)
    return rows


def test_a_score_shift_on_one_scanner_is_an_alert_while_the_other_is_stable(
        database: Database, drifted: list[Obs]) -> None:
    with database.read() as session:
        (report,) = queries.drift(session, MODEL, VERSION, JANUARY, MARCH)
    edges = tuple(i / 10 for i in range(1, 10))  # the score's bins: tenths of [0, 1]
    assert report.score.edges == pytest.approx(edges)
    shifted, stable = report.scanners  # in order of name
    assert (stable.scanner_model, stable.n_baseline, stable.n_current) == (STABLE, 400, 400)
    assert stable.psi == 0.0 and stable.ks is not None and stable.ks.statistic == 0.0
    assert stable.judgement is not None and stable.judgement.verdict is DriftVerdict.STABLE
    expected = psi(histogram(_scores(drifted, JANUARY, SHIFTED), edges),
                   histogram(_scores(drifted, MARCH, SHIFTED), edges))
    assert shifted.psi == pytest.approx(expected) and expected > 0.25
    assert shifted.judgement is not None and shifted.judgement.verdict is DriftVerdict.ALERT
    assert not shifted.small
    # Pooled, ten times as many stable studies dilute the shift below the warn mark.
    assert report.score.psi is not None and report.score.psi < 0.1
    assert report.score.baseline_counts == histogram(_scores(drifted, JANUARY), edges)
    assert report.score.current_counts == histogram(_scores(drifted, MARCH), edges)


def test_an_input_shift_is_flagged_with_summaries_of_both_windows(
        database: Database, drifted: list[Obs]) -> None:
    with database.read() as session:
        (report,) = queries.drift(session, MODEL, VERSION, JANUARY, MARCH)
    inputs = {item.name: item for item in report.inputs}
    thickness = inputs["slice_thickness"]
    assert thickness.edges == (1.0, math.nextafter(1.0, math.inf))
    assert thickness.baseline_counts == (0, 440, 0)
    assert thickness.current_counts == (0, 400, 40)
    assert thickness.psi == pytest.approx(psi([0, 440, 0], [0, 400, 40]))
    assert thickness.judgement is not None
    assert thickness.judgement.verdict is DriftVerdict.ALERT
    assert (thickness.baseline.n, thickness.baseline.mean, thickness.baseline.std) == (
        440, 1.0, 0.0)
    assert thickness.current.mean == pytest.approx((400 * 1.0 + 40 * 5.0) / 440)
    assert (thickness.current.p50, thickness.current.p95) == (1.0, 5.0)
    kvp = inputs["kvp"]
    assert (kvp.baseline.n, kvp.baseline.missing, kvp.psi, kvp.judgement) == (0, 440, None, None)
    assert inputs["pixel_mean"].psi == 0.0
    kernel = {c.name: c for c in report.categories}["kernel"]
    assert (kernel.baseline, kernel.current) == ({"STANDARD": 440},
                                                 {"BONE": 40, "STANDARD": 400})
    assert kernel.judgement is not None and kernel.judgement.verdict is DriftVerdict.ALERT
    names = {name for name, item in report.measures()
             if item.judgement is not None and item.judgement.verdict is DriftVerdict.ALERT}
    assert names == {"input:slice_thickness", "input:kernel", f"scanner:{SHIFTED}"}


def test_a_pixel_statistic_shift_is_flagged(database: Database) -> None:
    rows = [Obs(JANUARY.start, pixel_mean=i / 100, model="cxr") for i in range(100)]
    rows += [Obs(MARCH.start, pixel_mean=0.5 + i / 100, model="cxr") for i in range(100)]
    add_rows(database, rows)
    with database.read() as session:
        (report,) = queries.drift(session, "cxr", VERSION, JANUARY, MARCH)
    pixel_mean = {item.name: item for item in report.inputs}["pixel_mean"]
    edges = baseline_edges([i / 100 for i in range(100)], 10)
    assert pixel_mean.psi == pytest.approx(psi(
        histogram([i / 100 for i in range(100)], edges),
        histogram([0.5 + i / 100 for i in range(100)], edges)))
    assert pixel_mean.judgement is not None
    assert pixel_mean.judgement.verdict is DriftVerdict.ALERT
    assert pixel_mean.current.mean == pytest.approx(0.995)


def test_drift_counts_only_the_two_windows(database: Database, drifted: list[Obs]) -> None:
    with database.read() as session:
        (report,) = queries.drift(session, MODEL, VERSION, JANUARY, MARCH)
        assert queries.drift(session, "no-such-model", None, JANUARY, MARCH) == ()
    assert (report.score.baseline.n, report.score.current.n) == (440, 440)
    assert sum(report.score.current_counts) == 440
    thickness = {item.name: item for item in report.inputs}["slice_thickness"]
    assert thickness.current.p95 == 5.0  # the 9 mm studies of February are not counted


def test_small_windows_are_flagged(database: Database) -> None:
    add_rows(database, [Obs(JANUARY.start, score=i / 10) for i in range(10)]
             + [Obs(MARCH.start, score=i / 10) for i in range(10)])
    with database.read() as session:
        (report,) = queries.drift(session, MODEL, VERSION, JANUARY, MARCH,
                                  DriftOptions(min_group=11))
        (bigger,) = queries.drift(session, MODEL, VERSION, JANUARY, MARCH,
                                  DriftOptions(min_group=10))
    assert report.score.small and all(s.small for s in report.scanners)
    assert not bigger.score.small


def test_sampled_edges_keep_the_histograms_exact(database: Database, drifted: list[Obs],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "SAMPLE_ROWS", 100)
    with database.read() as session:
        (report,) = queries.drift(session, MODEL, VERSION, JANUARY, MARCH)
    assert sum(report.score.baseline_counts) == 440
    assert report.score.baseline.p50 == pytest.approx(0.5, abs=0.1)
    assert report.score.baseline.mean == pytest.approx(sum(_scores(drifted, JANUARY)) / 440)
    assert report.scanners[1].scanner_model == STABLE and report.scanners[1].psi == 0.0


def test_values_get_bins_of_their_own_only_when_they_repeat() -> None:
    up = math.inf
    slices = np.array([1.0] * 20 + [5.0] * 20)
    assert queries.edges_of(slices, 10) == (1.0, math.nextafter(1.0, up), 5.0,
                                            math.nextafter(5.0, up))
    few = np.arange(10) / 10  # ten scores, each once: quantiles, not a bin per score
    assert queries.edges_of(few, 10) == baseline_edges(few, 10)


def test_the_main_queries_use_the_model_version_date_index(database: Database) -> None:
    with database.read() as session:
        if database.is_postgres:  # an empty table would be scanned: ask whether it can not
            session.execute(text("SET LOCAL enable_seqscan = off"))
        plans = queries.plans(session, MODEL, VERSION, FEBRUARY)
    for name, plan in plans.items():
        assert "ix_qa_observations_model_name_model_version_study_date" in plan, (name, plan)


# --- windows ---------------------------------------------------------------------------


def test_windows_parse_and_refuse() -> None:
    today = date(2026, 3, 31)
    assert Window.parse("2026-01-01..2026-01-31") == JANUARY
    assert Window.trailing("90d", today) == Window(date(2026, 1, 1), today)
    assert Window.between(date(2026, 3, 1), None, today) == MARCH
    assert Window.between(None, None, today) is None
    assert queries.drift_windows(today) == (Window(date(2025, 12, 2), date(2026, 3, 1)),
                                            Window(date(2026, 3, 2), today))
    for bad in ("2026-01-31..2026-01-01", "2026-02-30..2026-03-01", "January", ""):
        with pytest.raises(QaConfigError):
            Window.parse(bad)
    for bad in ("0d", "90", "d"):
        with pytest.raises(QaConfigError):
            Window.trailing(bad, today)


def test_saturated_scores_that_only_jitter_are_stable(database: Database) -> None:
    # a model that separates well gives scores within 1e-4 of 0 and 1; quantile bins of
    # such a baseline are hair-thin and chance alone made PSI alert on an unchanged
    # scanner (seen in the QA scenario); the score's fixed tenths do not
    rng = np.random.default_rng(5)
    rows = []
    for window in (JANUARY, MARCH):
        days = _days(window)
        for i in range(24):
            base = 0.9998 if i % 2 else 0.01
            rows.append(Obs(next(days), score=float(base + rng.uniform(0, 1e-4)),
                            scanner=STABLE, kvp=None))
    add_rows(database, rows)
    with database.read() as session:
        (report,) = queries.drift(session, MODEL, VERSION, JANUARY, MARCH)
    assert report.score.psi is not None and report.score.psi < 0.01
    assert report.score.judgement is not None
    assert report.score.judgement.verdict is DriftVerdict.STABLE


def test_agreement_by_a_stratum_the_site_configured(database: Database) -> None:
    day = date(2026, 1, 10)
    wrist, hand = (("ProtocolName", "WRIST 2V"),), (("ProtocolName", "HAND 3V"),)
    add_rows(database, [Obs(day, ai=True, read=True, strata=wrist)] * 3
             + [Obs(day, ai=True, read=False, strata=wrist)]
             + [Obs(day, ai=False, read=False, strata=hand)] * 2
             + [Obs(day, ai=False, read=True)])  # kept before the site configured it
    with database.read() as session:
        report = queries.agreement(session, MODEL, by="ProtocolName")
    counts = {row.group: row.agreement.counts for row in report.rows}
    assert counts == {"WRIST 2V": Counts(tp=3, fp=1), "HAND 3V": Counts(tn=2),
                      "unknown": Counts(fn=1)}
    with database.read() as session, pytest.raises(QaConfigError, match="DICOM keyword"):
        queries.agreement(session, MODEL, by="NotAKeyword")
