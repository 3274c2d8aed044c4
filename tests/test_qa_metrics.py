"""Agreement metrics: the 2x2 table, Wilson intervals, kappa, AUC and the ROC curve,
against values worked out by hand in the comments."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from radbridge.qa.errors import QaConfigError, QaInputError
from radbridge.qa.metrics import (
    Counts,
    agreement,
    auc,
    auc_from_histograms,
    auc_interval,
    cohen_kappa,
    hanley_mcneil,
    roc_points,
    wilson,
)

# The table used throughout: AI positive 50 (tp 40, fp 10), AI negative 50 (tn 45, fn 5).
TABLE = Counts(tp=40, fp=10, tn=45, fn=5)


def test_from_pairs_puts_each_pair_in_its_cell() -> None:
    pairs = [(True, True)] * 3 + [(True, False)] * 2 + [(False, False)] * 4 + [(False, True)]
    assert Counts.from_pairs(pairs) == Counts(tp=3, fp=2, tn=4, fn=1)
    assert Counts.from_pairs(pairs).total == 10


def test_counts_add_cell_by_cell_and_sum_from_empty() -> None:
    per_site = [Counts(1, 2, 3, 4), Counts(10, 20, 30, 40)]
    assert per_site[0] + per_site[1] == Counts(11, 22, 33, 44)
    assert sum(per_site, Counts()) == Counts(11, 22, 33, 44)


def test_counts_take_what_sql_drivers_return() -> None:
    # PostgreSQL's SUM over bigint arrives as Decimal; NumPy sums as numpy integers.
    assert Counts(tp=Decimal(4), fn=np.int64(2)) == Counts(tp=4, fn=2)  # type: ignore[arg-type]


@pytest.mark.parametrize("cells", [{"tp": -1}, {"fn": 1.5}, {"tn": True},
                                   {"fp": Decimal("2.5")}, {"fp": Decimal("NaN")}])
def test_counts_refuse_what_is_not_a_count(cells: dict[str, object]) -> None:
    with pytest.raises(QaInputError, match=next(iter(cells))):
        Counts(**cells)  # type: ignore[arg-type]


def test_wilson_interval_of_40_of_50_by_formula() -> None:
    # z = 1.959964, z^2/n = 3.841459/50 = 0.0768292
    # centre = (0.8 + 0.0768292/2) / 1.0768292 = 0.778596
    # half   = z * sqrt(0.8*0.2/50 + 0.0768292/(4*50)) / 1.0768292
    #        = 1.959964 * sqrt(0.0032 + 0.000384146) / 1.0768292 = 0.108967
    rate = wilson(40, 50)
    assert rate.value == 0.8
    assert rate.low == pytest.approx(0.778596 - 0.108967, abs=1e-5)  # 0.669629
    assert rate.high == pytest.approx(0.778596 + 0.108967, abs=1e-5)  # 0.887563
    assert (rate.numerator, rate.denominator) == (40, 50)


def test_wilson_at_zero_successes_reaches_up_to_z2_over_n_plus_z2() -> None:
    # p = 0: centre and half width are both (z^2/2n)/(1 + z^2/n), so low = 0 and
    # high = z^2/(n + z^2); at 95 %: 3.841459/13.841459 = 0.277533; at 99 % z = 2.575829,
    # 6.634897/16.634897 = 0.398854.
    assert wilson(0, 10).low == 0.0
    assert wilson(0, 10).high == pytest.approx(0.277533, abs=1e-6)
    assert wilson(0, 10, confidence=0.99).high == pytest.approx(0.398854, abs=1e-6)
    assert wilson(10, 10).low == pytest.approx(1 - 0.277533, abs=1e-6)
    assert wilson(10, 10).high == 1.0


def test_wilson_of_nothing_counted_has_no_value() -> None:
    assert wilson(0, 0).value is None
    assert wilson(0, 0).low is None and wilson(0, 0).high is None


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95, -0.5])
def test_a_confidence_outside_0_1_is_refused_by_name(confidence: float) -> None:
    with pytest.raises(QaConfigError, match="confidence"):
        wilson(1, 2, confidence)


def test_wilson_refuses_more_successes_than_trials() -> None:
    with pytest.raises(QaInputError):
        wilson(3, 2)


def test_agreement_of_the_table_by_hand() -> None:
    result = agreement(TABLE)
    assert result.agreement.value == pytest.approx(85 / 100)
    assert result.sensitivity.value == pytest.approx(40 / 45)
    assert result.specificity.value == pytest.approx(45 / 55)
    assert result.ppv.value == pytest.approx(40 / 50)
    assert result.npv.value == pytest.approx(45 / 50)
    assert result.ai_positive_rate.value == pytest.approx(50 / 100)
    assert result.radiologist_positive_rate.value == pytest.approx(45 / 100)
    # Wilson for sensitivity 40/45: centre 0.858302, half 0.093293 (same formula as above).
    assert (result.sensitivity.low, result.sensitivity.high) == pytest.approx(
        (0.765009, 0.951595), abs=1e-5)
    # PPV is 40/50, the interval computed in the Wilson test.
    assert (result.ppv.low, result.ppv.high) == pytest.approx((0.669629, 0.887562), abs=1e-5)
    # kappa: po = 0.85; pe = (50*45 + 50*55)/100^2 = 0.5; (0.85 - 0.5)/(1 - 0.5) = 0.7
    assert result.kappa == pytest.approx(0.7)
    assert result.small is False


def test_a_group_below_min_group_is_flagged_small_not_dropped() -> None:
    assert agreement(Counts(tp=10, fp=5, tn=10, fn=4)).small is True  # 29 < 30
    assert agreement(Counts(tp=10, fp=5, tn=10, fn=5)).small is False  # 30
    assert agreement(TABLE, min_group=101).small is True


def test_rates_with_an_empty_denominator_are_none_not_errors() -> None:
    only_negatives = agreement(Counts(tn=12, fp=3))
    assert only_negatives.sensitivity.value is None
    assert only_negatives.specificity.value == pytest.approx(12 / 15)
    assert only_negatives.npv.value == 1.0


def test_kappa_is_undefined_when_both_readers_see_one_class_only() -> None:
    assert cohen_kappa(Counts(tn=10)) is None
    assert cohen_kappa(Counts()) is None
    assert cohen_kappa(Counts(tp=7, tn=3)) == pytest.approx(1.0)
    # Never agreeing: po = 0, pe = (5*5 + 5*5)/100 = 0.5, kappa = -1.
    assert cohen_kappa(Counts(fp=5, fn=5)) == pytest.approx(-1.0)


def test_as_json_is_plain_json_with_every_rate() -> None:
    document = json.loads(json.dumps(agreement(TABLE).as_json()))
    assert document["counts"] == {"tp": 40, "fp": 10, "tn": 45, "fn": 5, "total": 100}
    assert document["sensitivity"]["numerator"] == 40
    assert document["sensitivity"]["denominator"] == 45
    assert document["kappa"] == pytest.approx(0.7)
    assert document["small"] is False
    assert set(document) == {"counts", "agreement", "sensitivity", "specificity", "ppv",
                             "npv", "ai_positive_rate", "radiologist_positive_rate", "kappa",
                             "small"}


def test_min_group_must_be_a_whole_number() -> None:
    with pytest.raises(QaConfigError, match="min_group"):
        agreement(TABLE, min_group=-1)


def test_auc_counts_pairs() -> None:
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(3 / 4)
    # positives 0.5, 0.9 against negatives 0.5, 0.2: tie (1/2), win, win, win -> 3.5/4
    assert auc([0.5, 0.5, 0.2, 0.9], [True, False, False, True]) == pytest.approx(3.5 / 4)
    assert auc([0.3, 0.3, 0.3], [1, 0, 1]) == pytest.approx(0.5)


def test_auc_needs_both_classes_and_matching_lengths() -> None:
    with pytest.raises(QaInputError, match="positive and one negative"):
        auc([0.1, 0.2], [1, 1])
    with pytest.raises(QaInputError, match="labels"):
        auc([0.1, 0.2], [1])
    with pytest.raises(QaInputError, match="labels"):
        auc([0.1, 0.2], [1, 2])
    with pytest.raises(QaInputError, match="scores"):
        auc([0.1, math.nan], [1, 0])


def test_auc_from_histograms_treats_a_bin_as_ties() -> None:
    # negatives in bins 0 and 1, positives in bins 1 and 2: win, tie, win, win -> 3.5/4,
    # the AUC of scores (0, 1) against (1, 2).
    assert auc_from_histograms([0, 1, 1], [1, 1, 0]) == pytest.approx(0.875)
    assert auc([0, 1, 1, 2], [0, 0, 1, 1]) == pytest.approx(0.875)
    with pytest.raises(QaInputError):
        auc_from_histograms([1, 2], [1])


def test_hanley_mcneil_standard_error_by_hand() -> None:
    # A = 0.8, 10 positives, 20 negatives: Q1 = 0.8/1.2 = 0.666667, Q2 = 1.28/1.8 = 0.711111
    # var = (0.16 + 9*(0.666667-0.64) + 19*(0.711111-0.64)) / 200 = 1.751111/200 = 0.0087556
    # se = 0.093571, half width = 1.959964 * 0.093571 = 0.183396
    area, low, high = hanley_mcneil(0.8, 10, 20)
    assert area == 0.8
    assert (low, high) == pytest.approx((0.616604, 0.983396), abs=1e-5)


def test_auc_interval_is_clamped_to_0_1() -> None:
    area, low, high = auc_interval([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert area == pytest.approx(0.75)
    assert 0.0 <= low < area < high == 1.0


def test_roc_points_by_hand() -> None:
    # thresholds from the top: >= 0.8 takes one positive; >= 0.4 adds a negative;
    # >= 0.35 the other positive; >= 0.1 the last negative.
    assert roc_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == [
        (math.inf, 0.0, 0.0), (0.8, 0.0, 0.5), (0.4, 0.5, 0.5), (0.35, 0.5, 1.0),
        (0.1, 1.0, 1.0)]


def test_roc_points_take_tied_scores_together() -> None:
    assert roc_points([0.5, 0.5, 0.2], [1, 0, 0]) == [
        (math.inf, 0.0, 0.0), (0.5, 0.5, 1.0), (0.2, 1.0, 1.0)]


SCORED = st.lists(st.tuples(st.integers(0, 6).map(lambda i: i / 6), st.booleans()),
                  min_size=2, max_size=40).filter(
    lambda rows: any(y for _, y in rows) and not all(y for _, y in rows))


@given(SCORED)
def test_auc_equals_brute_force_pair_counting(rows: list[tuple[float, bool]]) -> None:
    positives = [s for s, y in rows if y]
    negatives = [s for s, y in rows if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    scores, labels = zip(*rows, strict=True)
    assert auc(scores, labels) == pytest.approx(wins / (len(positives) * len(negatives)))


@given(SCORED)
def test_binned_auc_equals_auc_of_the_bin_index(rows: list[tuple[float, bool]]) -> None:
    positives, negatives = [0] * 7, [0] * 7
    for score, label in rows:
        (positives if label else negatives)[round(score * 6)] += 1
    scores, labels = zip(*rows, strict=True)
    assert auc_from_histograms(positives, negatives) == pytest.approx(auc(scores, labels))


@given(SCORED)
def test_roc_runs_from_origin_to_one_one_and_never_goes_back(
        rows: list[tuple[float, bool]]) -> None:
    scores, labels = zip(*rows, strict=True)
    points = roc_points(scores, labels)
    assert points[0][1:] == (0.0, 0.0) and points[-1][1:] == (1.0, 1.0)
    for (t0, f0, r0), (t1, f1, r1) in pairwise(points):
        assert t1 < t0 and f1 >= f0 and r1 >= r0


@given(st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_interval_holds_its_estimate_inside_0_1(case: tuple[int, int],
                                                       confidence: float) -> None:
    successes, total = case
    rate = wilson(successes, total, confidence)
    if total == 0:
        assert rate.value is None
    else:
        assert rate.low is not None and rate.high is not None and rate.value is not None
        assert 0.0 <= rate.low <= rate.value <= rate.high <= 1.0


@given(st.builds(Counts, *(st.integers(0, 200) for _ in range(4))))
def test_kappa_lies_in_minus_one_one_and_never_beats_raw_agreement(counts: Counts) -> None:
    result = agreement(counts)
    if result.kappa is None:
        return
    assert -1.0 - 1e-12 <= result.kappa <= 1.0 + 1e-12
    assert result.agreement.value is not None
    assert result.kappa <= result.agreement.value + 1e-12
