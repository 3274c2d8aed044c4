"""Drift of a distribution against a baseline window: PSI, Kolmogorov-Smirnov, a verdict.

Used for the model's output scores and for acquisition inputs (kVp, slice thickness, pixel
spacing, convolution kernel, pixel statistics). Two paths give the same numbers:

- raw values (small windows): `psi_values`, `ks`, `Summary.of`;
- counts per bin (a million rows): fix the bins once from the baseline with
  `baseline_edges`, let SQL count both windows per bin, then `psi` and
  `ks_from_histograms`. `baseline_edges` returns the inner edges only; bin i holds
  `edges[i-1] <= x < edges[i]`, the first and last bins are open-ended. That is exactly
  PostgreSQL's `width_bucket(x, ARRAY[edges])` (0-based), and `histogram` does the same.

PSI measures how far the distribution moved; the KS p-value says whether any move is
beyond chance, which on large windows is nearly always, so KS alone only warns (`judge`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from radbridge.qa.errors import QaConfigError, QaInputError
from radbridge.qa.metrics import finite_array

DEFAULT_EPSILON = 1e-4
"""Stand-in share for an empty bin: PSI's logarithm is undefined at 0."""


def baseline_edges(scores: npt.ArrayLike, bins: int = 10) -> tuple[float, ...]:
    """Inner bin edges at the baseline's quantiles, so each bin holds about 1/bins of it.
    Repeated quantiles (scores piled at 0 or 1) are merged, giving fewer bins."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise QaConfigError("bins", "an integer >= 2")
    values = finite_array(scores, "scores")
    if values.size == 0:
        raise QaInputError("scores", "the baseline is empty")
    cuts = np.quantile(values, np.arange(1, bins) / bins)
    return tuple(float(edge) for edge in np.unique(cuts))


def histogram(values: npt.ArrayLike, edges: Sequence[float]) -> tuple[int, ...]:
    """Counts per bin of `edges` (len(edges) + 1 bins, open at both ends)."""
    inner = _edges(edges)
    sample = finite_array(values, "values")
    index = np.searchsorted(inner, sample, side="right")
    return tuple(int(n) for n in np.bincount(index, minlength=inner.size + 1))


def _edges(edges: Sequence[float]) -> npt.NDArray[np.float64]:
    inner = finite_array(edges, "edges")
    if inner.size and not np.all(np.diff(inner) > 0):
        raise QaInputError("edges", "must be strictly increasing")
    return inner


def _counts(counts: Sequence[int] | npt.NDArray[np.integer], argument: str
            ) -> npt.NDArray[np.float64]:
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise QaInputError(argument, "must be a non-empty sequence of counts")
    if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array != np.round(array)):
        raise QaInputError(argument, "must hold whole counts >= 0")
    if array.sum() == 0:
        raise QaInputError(argument, "holds no observations")
    return array


def psi(baseline_counts: Sequence[int], current_counts: Sequence[int], *,
        epsilon: float = DEFAULT_EPSILON) -> float:
    """Population stability index, sum of (q - p) ln(q / p) over bins of the shares p
    (baseline) and q (current). Each term is >= 0; an empty bin's share is raised to
    `epsilon` so a bin that empties or fills up counts heavily instead of dividing by 0."""
    if not isinstance(epsilon, int | float) or not 0.0 < epsilon < 1.0:
        raise QaConfigError("epsilon", "a number strictly between 0 and 1, such as 1e-4")
    base = _counts(baseline_counts, "baseline_counts")
    current = _counts(current_counts, "current_counts")
    if base.shape != current.shape:
        raise QaInputError("current_counts", "must have as many bins as baseline_counts")
    p = np.maximum(base / base.sum(), epsilon)
    q = np.maximum(current / current.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_values(baseline: npt.ArrayLike, current: npt.ArrayLike, bins: int = 10) -> float:
    """PSI of two raw samples, binned at the baseline's quantiles."""
    edges = baseline_edges(baseline, bins)
    return psi(histogram(baseline, edges), histogram(current, edges))


def categorical_psi(baseline: Mapping[str, int], current: Mapping[str, int], *,
                    epsilon: float = DEFAULT_EPSILON) -> float:
    """PSI over categories (convolution kernel, scanner model). A category seen in only
    one window gets share `epsilon` in the other: a new kernel shows up as drift."""
    categories = sorted(set(baseline) | set(current))
    if not categories:
        raise QaInputError("baseline", "no categories in either window")
    return psi([baseline.get(name, 0) for name in categories],
               [current.get(name, 0) for name in categories], epsilon=epsilon)


@dataclass(frozen=True)
class KsResult:
    """Two-sample Kolmogorov-Smirnov: the largest gap between the two CDFs, its p-value."""

    statistic: float
    p_value: float
    n_baseline: int
    n_current: int


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution K, summing whichever series converges
    fast: 2 sum (-1)^(j-1) exp(-2 j^2 lam^2) for lam >= 1, else one minus the CDF's
    Jacobi-theta form sqrt(2 pi)/lam sum exp(-(2j-1)^2 pi^2 / (8 lam^2))."""
    if lam < 0.1:
        return 1.0  # exactly so to within 1e-50, and the series below would underflow
    if lam >= 1.0:
        total = sum((1.0 if j % 2 else -1.0) * math.exp(-2.0 * j * j * lam * lam)
                    for j in range(1, 101))
        return min(max(2.0 * total, 0.0), 1.0)
    theta = sum(math.exp(-((2 * j - 1) ** 2) * math.pi ** 2 / (8.0 * lam * lam))
                for j in range(1, 101))
    return min(max(1.0 - math.sqrt(2.0 * math.pi) / lam * theta, 0.0), 1.0)


def ks_p_value(statistic: float, n_baseline: int, n_current: int) -> float:
    """Asymptotic p-value with effective n = n1 n2 / (n1 + n2) and Stephens' (1970)
    small-sample correction lam = (sqrt(n) + 0.12 + 0.11 / sqrt(n)) D."""
    if n_baseline < 1 or n_current < 1:
        raise QaInputError("n_baseline, n_current", "must both be at least 1")
    root_n = math.sqrt(n_baseline * n_current / (n_baseline + n_current))
    return kolmogorov_sf((root_n + 0.12 + 0.11 / root_n) * statistic)


def ks(baseline: npt.ArrayLike, current: npt.ArrayLike) -> KsResult:
    """Two-sample KS on raw values: the CDFs are compared at every observed value."""
    base = np.sort(finite_array(baseline, "baseline"))
    now = np.sort(finite_array(current, "current"))
    if base.size == 0 or now.size == 0:
        raise QaInputError("baseline, current", "both windows need at least one value")
    points = np.concatenate([base, now])
    gap = np.abs(np.searchsorted(base, points, side="right") / base.size
                 - np.searchsorted(now, points, side="right") / now.size)
    statistic = float(gap.max())
    return KsResult(statistic, ks_p_value(statistic, base.size, now.size),
                    int(base.size), int(now.size))


def ks_from_histograms(edges: Sequence[float], baseline_counts: Sequence[int],
                       current_counts: Sequence[int]) -> KsResult:
    """KS from counts per bin (as SQL gives them). An approximation: the CDFs are compared
    only at the edges, so the statistic can fall short of the exact one (never exceed it)
    and the p-value errs high; finer bins make it closer."""
    inner = _edges(edges)
    base = _counts(baseline_counts, "baseline_counts")
    now = _counts(current_counts, "current_counts")
    if base.size != inner.size + 1 or now.size != inner.size + 1:
        raise QaInputError("counts", "need len(edges) + 1 bins each")
    gap = np.abs(np.cumsum(base) / base.sum() - np.cumsum(now) / now.sum())
    statistic = float(gap.max())
    n_base, n_now = int(base.sum()), int(now.sum())
    return KsResult(statistic, ks_p_value(statistic, n_base, n_now), n_base, n_now)


@dataclass(frozen=True)
class DriftThresholds:
    """Where drift starts to matter: PSI 0.1 and 0.25 are the customary warn/alert marks."""

    psi_warn: float = 0.1
    psi_alert: float = 0.25
    ks_alpha: float = 0.01

    def __post_init__(self) -> None:
        for name in ("psi_warn", "psi_alert", "ks_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise QaConfigError(name, "a finite number")
        if not 0.0 < self.psi_warn < self.psi_alert:
            raise QaConfigError("psi_warn", "a number above 0 and below psi_alert")
        if not 0.0 < self.ks_alpha < 1.0:
            raise QaConfigError("ks_alpha", "a number strictly between 0 and 1, such as 0.01")

    @classmethod
    def from_config(cls, obj: Mapping[str, object]) -> DriftThresholds:
        """From a config mapping; unknown keys are refused, named."""
        unknown = sorted(set(obj) - {"psi_warn", "psi_alert", "ks_alpha"})
        if unknown:
            raise QaConfigError(unknown[0], "one of psi_warn, psi_alert, ks_alpha")
        return cls(**obj)  # type: ignore[arg-type]  # values are checked in __post_init__


class DriftVerdict(enum.Enum):
    STABLE = "stable"
    WARN = "warn"
    ALERT = "alert"


@dataclass(frozen=True)
class Judgement:
    """A verdict and the reason for it, in words fit for a QA table."""

    verdict: DriftVerdict
    reason: str


def judge(psi: float | None, ks: KsResult | None,
          thresholds: DriftThresholds | None = None) -> Judgement:
    """ALERT when PSI reaches psi_alert; WARN when it reaches psi_warn or when KS rejects
    sameness at ks_alpha; else STABLE. Either measure may be missing (None)."""
    limits = thresholds or DriftThresholds()
    reasons: list[str] = []
    verdict = DriftVerdict.STABLE
    if psi is not None:
        if psi >= limits.psi_alert:
            verdict = DriftVerdict.ALERT
            reasons.append(f"PSI {psi:.3f} >= alert {limits.psi_alert:g}")
        elif psi >= limits.psi_warn:
            verdict = DriftVerdict.WARN
            reasons.append(f"PSI {psi:.3f} >= warn {limits.psi_warn:g}")
        else:
            reasons.append(f"PSI {psi:.3f} < warn {limits.psi_warn:g}")
    if ks is not None:
        rejected = ks.p_value < limits.ks_alpha
        if rejected and verdict is DriftVerdict.STABLE:
            verdict = DriftVerdict.WARN
        relation = "<" if rejected else ">="
        reasons.append(f"KS D {ks.statistic:.3f} p {ks.p_value:.3g} {relation} "
                       f"alpha {limits.ks_alpha:g}")
    return Judgement(verdict, "; ".join(reasons) or "no measure given")


@dataclass(frozen=True)
class Summary:
    """A numeric sample in six numbers, for input-parameter tables; None when empty.
    `missing` counts absent values (no kVp on a fundus photograph), kept apart from n."""

    n: int
    mean: float | None
    std: float | None
    p5: float | None
    p50: float | None
    p95: float | None
    missing: int = 0

    @classmethod
    def of(cls, values: Sequence[float | None] | npt.NDArray[np.floating]) -> Summary:
        """Summarise `values`; None and NaN count as missing. `std` is the sample standard
        deviation (n - 1), None below two values."""
        if isinstance(values, np.ndarray):
            raw = values.astype(np.float64).ravel()
        else:
            raw = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
        if np.any(np.isinf(raw)):
            raise QaInputError("values", "must not hold infinities")
        present = raw[~np.isnan(raw)]
        missing = int(raw.size - present.size)
        if present.size == 0:
            return cls(0, None, None, None, None, None, missing)
        p5, p50, p95 = (float(q) for q in np.quantile(present, (0.05, 0.5, 0.95)))
        std = float(np.std(present, ddof=1)) if present.size > 1 else None
        return cls(int(present.size), float(present.mean()), std, p5, p50, p95, missing)
