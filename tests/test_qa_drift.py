"""Drift measures: quantile bins, PSI, two-sample KS with its p-value, the verdict, and
numeric summaries, against values worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from radbridge.qa.drift import (
    DriftThresholds,
    DriftVerdict,
    KsResult,
    Summary,
    baseline_edges,
    categorical_psi,
    histogram,
    judge,
    kolmogorov_sf,
    ks,
    ks_from_histograms,
    psi,
    psi_values,
)
from radbridge.qa.errors import QaConfigError, QaInputError


def test_baseline_edges_are_the_inner_quantiles() -> None:
    # 1..10 at q = 0.25, 0.5, 0.75 with linear interpolation: positions 2.25, 4.5, 6.75
    # between sorted values -> 3.25, 5.5, 7.75.
    assert baseline_edges(list(range(1, 11)), bins=4) == (3.25, 5.5, 7.75)


def test_repeated_quantiles_merge_into_fewer_bins() -> None:
    # eight zeros, then 1 and 2; q = 0.2 .. 0.8 sit at positions 1.8, 3.6, 5.4, 7.2:
    # 0, 0, 0 and 0 + 0.2 * (1 - 0) = 0.2.
    assert baseline_edges([0] * 8 + [1, 2], bins=5) == pytest.approx((0.0, 0.2))


def test_baseline_edges_refuse_too_few_bins_and_an_empty_baseline() -> None:
    with pytest.raises(QaConfigError, match="bins"):
        baseline_edges([1, 2, 3], bins=1)
    with pytest.raises(QaInputError, match="empty"):
        baseline_edges([], bins=10)


def test_histogram_bins_are_open_ended_and_closed_on_the_left() -> None:
    # bins: (-inf, 2.75) [2.75, 5.5) [5.5, 7.75) [7.75, inf); an edge value goes up,
    # as PostgreSQL's width_bucket(x, ARRAY[2.75, 5.5, 7.75]) puts it.
    assert histogram([-100, 1, 2.75, 3, 10, 1e9], (2.75, 5.5, 7.75)) == (2, 2, 0, 2)
    assert histogram([5.5], (2.75, 5.5, 7.75)) == (0, 0, 1, 0)


def test_histogram_refuses_edges_out_of_order() -> None:
    with pytest.raises(QaInputError, match="edges"):
        histogram([1.0], (2.0, 1.0))


def test_psi_of_two_small_histograms_by_hand() -> None:
    # p = (0.5, 0.3, 0.2), q = (0.4, 0.3, 0.3)
    # (0.4-0.5) ln(0.4/0.5) + 0 + (0.3-0.2) ln(0.3/0.2) = 0.022314 + 0.040547 = 0.062861
    assert psi([50, 30, 20], [40, 30, 30]) == pytest.approx(0.062861, abs=1e-6)


def test_an_empty_bin_counts_with_epsilon() -> None:
    # p = (1, 1e-4) (the empty bin raised to epsilon), q = (0.5, 0.5):
    # (0.5-1) ln(0.5) + (0.5-1e-4) ln(0.5/1e-4) = 0.346574 + 4.257745 = 4.604318
    assert psi([100, 0], [50, 50]) == pytest.approx(4.604318, abs=1e-5)
    # a larger epsilon softens it:
    # (0.5-1) ln 0.5 + (0.5-0.01) ln 50 = 0.346574 + 1.916891 = 2.263465
    assert psi([100, 0], [50, 50], epsilon=0.01) == pytest.approx(2.263465, abs=1e-5)


@pytest.mark.parametrize(("base", "current", "argument"), [
    ([1, 2], [1, 2, 3], "current_counts"),
    ([0, 0], [1, 2], "baseline_counts"),
    ([1, -2], [1, 2], "baseline_counts"),
    ([1, 2], [1.5, 2], "current_counts"),
])
def test_psi_refuses_counts_it_cannot_compare(base: list[float], current: list[float],
                                               argument: str) -> None:
    with pytest.raises(QaInputError, match=argument):
        psi(base, current)  # type: ignore[arg-type]


def test_psi_values_of_a_shifted_sample_is_large_and_of_itself_zero() -> None:
    rng = np.random.default_rng(7)
    baseline = rng.normal(0.3, 0.1, 2000)
    assert psi_values(baseline, baseline) == 0.0
    assert psi_values(baseline, baseline + 0.1) > 0.25


def test_categorical_psi_counts_a_new_kernel_as_drift() -> None:
    # categories B30f, B45f, Br40: p = (0.6, 0.4, 1e-4), q = (0.6, 0.3, 0.1)
    # 0 + (0.3-0.4) ln(0.75) + (0.1-1e-4) ln(1000) = 0.028768 + 0.690085 = 0.718853
    value = categorical_psi({"B30f": 60, "B45f": 40}, {"B30f": 60, "B45f": 30, "Br40": 10})
    assert value == pytest.approx(0.718853, abs=1e-6)
    assert categorical_psi({"STANDARD": 5}, {"STANDARD": 9}) == 0.0


def test_ks_statistic_and_p_value_by_hand() -> None:
    # baseline 1 2 3 4, current 3 4 5 6 7. CDFs at 1..7:
    #   baseline .25 .5 .75 1 1 1 1;  current 0 0 .2 .4 .6 .8 1  -> largest gap 0.6 at 4.
    # effective n = 4*5/9 = 2.2222, sqrt = 1.490712;
    # lam = (1.490712 + 0.12 + 0.11/1.490712) * 0.6 = 1.010701, lam^2 = 1.021517
    # Q = 2 (e^-2.043034 - e^-8.172138 + e^-18.38731) = 2 (0.129635 - 0.000282) = 0.258705
    result = ks([1, 2, 3, 4], [3, 4, 5, 6, 7])
    assert result.statistic == pytest.approx(0.6)
    assert result.p_value == pytest.approx(0.258705, abs=1e-6)
    assert (result.n_baseline, result.n_current) == (4, 5)


def test_kolmogorov_tail_at_the_tabulated_critical_values() -> None:
    # the classical table: P(K > 1.3581) = 0.05, P(K > 1.6276) = 0.01, P(K > 1.2238) = 0.10
    assert kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=1e-5)
    assert kolmogorov_sf(1.6276) == pytest.approx(0.01, abs=1e-5)
    assert kolmogorov_sf(1.2238) == pytest.approx(0.10, abs=1e-4)
    # small lam (the other series): 1 - sqrt(2 pi)/0.5 * e^(-pi^2/2) = 0.963945
    assert kolmogorov_sf(0.5) == pytest.approx(0.963945, abs=1e-6)
    assert kolmogorov_sf(0.0) == 1.0


def test_the_two_series_agree_where_they_meet() -> None:
    assert kolmogorov_sf(1.0 - 1e-9) == pytest.approx(kolmogorov_sf(1.0), abs=1e-8)


def test_ks_of_identical_samples_is_zero_with_p_one() -> None:
    assert ks([0.2, 0.4, 0.4, 0.9], [0.9, 0.4, 0.2, 0.4]) == KsResult(0.0, 1.0, 4, 4)


def test_ks_refuses_an_empty_window() -> None:
    with pytest.raises(QaInputError):
        ks([], [1.0])


def test_ks_from_histograms_matches_raw_when_the_gap_is_at_an_edge() -> None:
    # edges 2.5, 4.5: baseline (2, 2, 0), current (0, 2, 3); CDFs .5 1 1 and 0 .4 1 -> 0.6,
    # the raw statistic too, and the same p-value since the counts are the same.
    result = ks_from_histograms((2.5, 4.5), (2, 2, 0), (0, 2, 3))
    assert result == ks([1, 2, 3, 4], [3, 4, 5, 6, 7])


def test_ks_from_histograms_needs_one_bin_more_than_edges() -> None:
    with pytest.raises(QaInputError, match="len"):
        ks_from_histograms((1.0,), (1, 2, 3), (1, 2, 3))


def test_thresholds_are_validated_by_name() -> None:
    with pytest.raises(QaConfigError, match="psi_warn"):
        DriftThresholds(psi_warn=0.3, psi_alert=0.25)
    with pytest.raises(QaConfigError, match="ks_alpha"):
        DriftThresholds(ks_alpha=1.5)
    with pytest.raises(QaConfigError, match="psi_alert"):
        DriftThresholds(psi_alert=math.nan)


def test_thresholds_from_config_refuse_unknown_keys() -> None:
    assert DriftThresholds.from_config({"psi_warn": 0.05}) == DriftThresholds(psi_warn=0.05)
    with pytest.raises(QaConfigError, match="psi_worn"):
        DriftThresholds.from_config({"psi_worn": 0.05})


SIGNIFICANT = KsResult(0.2, 0.001, 500, 500)
NOT_SIGNIFICANT = KsResult(0.02, 0.5, 500, 500)


def test_judge_alerts_on_large_psi_and_says_why() -> None:
    judgement = judge(0.3, NOT_SIGNIFICANT, DriftThresholds())
    assert judgement.verdict is DriftVerdict.ALERT
    assert "PSI 0.300 >= alert 0.25" in judgement.reason


def test_judge_warns_on_moderate_psi() -> None:
    assert judge(0.15, None).verdict is DriftVerdict.WARN


def test_ks_alone_only_warns() -> None:
    judgement = judge(0.05, SIGNIFICANT)
    assert judgement.verdict is DriftVerdict.WARN
    assert "p 0.001 < alpha 0.01" in judgement.reason
    assert judge(None, SIGNIFICANT).verdict is DriftVerdict.WARN


def test_judge_is_stable_when_nothing_crosses() -> None:
    judgement = judge(0.05, NOT_SIGNIFICANT)
    assert judgement.verdict is DriftVerdict.STABLE
    assert "PSI 0.050 < warn 0.1" in judgement.reason


def test_summary_by_hand_with_a_missing_value() -> None:
    # 1 2 3 4: mean 2.5, sample sd sqrt((2.25+0.25+0.25+2.25)/3) = sqrt(5/3) = 1.290994;
    # quantiles by linear interpolation at positions 0.15, 1.5, 2.85: 1.15, 2.5, 3.85
    summary = Summary.of([1.0, None, 2.0, 3.0, 4.0])
    assert (summary.n, summary.missing) == (4, 1)
    assert summary.mean == pytest.approx(2.5)
    assert summary.std == pytest.approx(1.290994, abs=1e-6)
    assert (summary.p5, summary.p50, summary.p95) == pytest.approx((1.15, 2.5, 3.85))


def test_summary_of_an_array_with_nan_and_of_nothing() -> None:
    assert Summary.of(np.array([120.0, np.nan])) == Summary(1, 120.0, None, 120.0, 120.0,
                                                            120.0, 1)
    assert Summary.of([]) == Summary(0, None, None, None, None, None, 0)


COUNTS = st.lists(st.integers(0, 1000), min_size=1, max_size=12).filter(lambda c: sum(c) > 0)
SAMPLE = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60)


def _same_length_pair(base: list[int]) -> st.SearchStrategy[tuple[list[int], list[int]]]:
    current = st.lists(st.integers(0, 1000), min_size=len(base), max_size=len(base))
    return st.tuples(st.just(base), current.filter(lambda c: sum(c) > 0))


@given(COUNTS.flatmap(_same_length_pair))
def test_psi_is_never_negative(pair: tuple[list[int], list[int]]) -> None:
    assert psi(*pair) >= 0.0


@given(COUNTS, st.integers(1, 50))
def test_psi_of_a_histogram_against_itself_or_a_multiple_is_zero(counts: list[int],
                                                                 scale: int) -> None:
    assert psi(counts, counts) == 0.0
    assert psi(counts, [c * scale for c in counts]) == pytest.approx(0.0, abs=1e-12)


@given(SAMPLE, SAMPLE)
def test_ks_statistic_and_p_value_are_in_0_1_and_symmetric(a: list[float],
                                                           b: list[float]) -> None:
    forward, backward = ks(a, b), ks(b, a)
    assert 0.0 <= forward.statistic <= 1.0 and 0.0 <= forward.p_value <= 1.0
    assert forward.statistic == pytest.approx(backward.statistic)


@given(SAMPLE, SAMPLE, st.integers(2, 8))
def test_binned_ks_never_exceeds_the_exact_statistic(a: list[float], b: list[float],
                                                     bins: int) -> None:
    edges = baseline_edges(a, bins)
    binned = ks_from_histograms(edges, histogram(a, edges), histogram(b, edges))
    assert binned.statistic <= ks(a, b).statistic + 1e-12


@given(st.floats(0.0, 5.0), st.floats(0.0, 5.0))
def test_kolmogorov_tail_decreases(x: float, y: float) -> None:
    low, high = sorted((x, y))
    assert kolmogorov_sf(high) <= kolmogorov_sf(low) + 1e-12
