"""Agreement between the AI and the radiologist: the 2x2 table, its rates, their intervals.

Everything works from counts, so the same code serves a few hundred pairs held in memory
and a million rows counted by SQL (`GROUP BY ai_positive, radiologist_positive`): build a
`Counts` from either and call `agreement`. Intervals are Wilson score intervals, which
stay inside [0, 1] and keep sensible coverage for the small subgroups QA must show
(a Wald interval collapses to a point at 0/n or n/n). A rate with denominator 0 has value
None rather than raising, because an empty cell in one stratum is normal, not an error.

Score-based measures (`auc`, `auc_interval`, `roc_points`) take raw scores and labels;
`auc_from_histograms` takes per-bin counts of positives and negatives for the SQL path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from radbridge.qa.errors import QaConfigError, QaInputError

DEFAULT_MIN_GROUP = 30
"""Below this many studies a group is flagged small: shown, but not to be over-read."""


@dataclass(frozen=True)
class Counts:
    """The 2x2 table of AI call against radiologist call (the radiologist is the reference)."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "tn", "fn"):
            object.__setattr__(self, name, _count(getattr(self, name), name))

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[bool, bool]]) -> Counts:
        """Count (ai_positive, radiologist_positive) pairs, one per study and finding."""
        cells = {(True, True): 0, (True, False): 0, (False, False): 0, (False, True): 0}
        for ai_positive, radiologist_positive in pairs:
            cells[(bool(ai_positive), bool(radiologist_positive))] += 1
        return cls(tp=cells[(True, True)], fp=cells[(True, False)],
                   tn=cells[(False, False)], fn=cells[(False, True)])

    def __add__(self, other: Counts) -> Counts:
        if not isinstance(other, Counts):
            return NotImplemented
        return Counts(self.tp + other.tp, self.fp + other.fp,
                      self.tn + other.tn, self.fn + other.fn)


def _count(value: object, name: str) -> int:
    """A cell as int. NumPy integers and whole Decimals pass too: PostgreSQL's SUM over
    bigint comes back as Decimal."""
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == int(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QaInputError(name, "must be a count (an integer >= 0)")
    return value


@dataclass(frozen=True)
class Rate:
    """A proportion with its confidence interval; all three None when nothing was counted."""

    value: float | None
    low: float | None
    high: float | None
    numerator: int
    denominator: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def z_for(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (1.96 for 0.95)."""
    if not isinstance(confidence, int | float) or not 0.0 < confidence < 1.0:
        raise QaConfigError("confidence", "a number strictly between 0 and 1, such as 0.95")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson(successes: int, total: int, confidence: float = 0.95) -> Rate:
    """`successes / total` with the Wilson score interval (Wilson 1927)."""
    z = z_for(confidence)
    if total < 0 or not 0 <= successes <= max(total, 0):
        raise QaInputError("successes", "must lie between 0 and total")
    if total == 0:
        return Rate(None, None, None, successes, total)
    p = successes / total
    z2n = z * z / total
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / total + z2n / (4.0 * total)) / (1.0 + z2n)
    # Clamping only absorbs rounding: mathematically low <= p <= high within [0, 1].
    low = min(max(centre - half, 0.0), p)
    high = max(min(centre + half, 1.0), p)
    return Rate(p, low, high, successes, total)


@dataclass(frozen=True)
class Agreement:
    """What QA reports for one group: the table, its rates, Cohen's kappa, a small flag."""

    counts: Counts
    agreement: Rate
    sensitivity: Rate
    specificity: Rate
    ppv: Rate
    npv: Rate
    ai_positive_rate: Rate
    radiologist_positive_rate: Rate
    kappa: float | None
    small: bool

    def as_json(self) -> dict[str, Any]:
        rates = ("agreement", "sensitivity", "specificity", "ppv", "npv",
                 "ai_positive_rate", "radiologist_positive_rate")
        document: dict[str, Any] = {"counts": {**asdict(self.counts), "total": self.counts.total}}
        document.update({name: getattr(self, name).as_json() for name in rates})
        document.update(kappa=self.kappa, small=self.small)
        return document


def agreement(counts: Counts, *, min_group: int = DEFAULT_MIN_GROUP,
              confidence: float = 0.95) -> Agreement:
    """All agreement measures of one table; `small` when it holds fewer than `min_group`."""
    if isinstance(min_group, bool) or not isinstance(min_group, int) or min_group < 0:
        raise QaConfigError("min_group", "an integer >= 0")
    c, n = counts, counts.total
    return Agreement(
        counts=c,
        agreement=wilson(c.tp + c.tn, n, confidence),
        sensitivity=wilson(c.tp, c.tp + c.fn, confidence),
        specificity=wilson(c.tn, c.tn + c.fp, confidence),
        ppv=wilson(c.tp, c.tp + c.fp, confidence),
        npv=wilson(c.tn, c.tn + c.fn, confidence),
        ai_positive_rate=wilson(c.tp + c.fp, n, confidence),
        radiologist_positive_rate=wilson(c.tp + c.fn, n, confidence),
        kappa=cohen_kappa(c),
        small=n < min_group,
    )


def cohen_kappa(counts: Counts) -> float | None:
    """Agreement beyond chance; None when chance agreement is total (one class only)."""
    n = counts.total
    if n == 0:
        return None
    observed = (counts.tp + counts.tn) / n
    ai_pos, rad_pos = counts.tp + counts.fp, counts.tp + counts.fn
    expected = (ai_pos * rad_pos + (n - ai_pos) * (n - rad_pos)) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def finite_array(values: npt.ArrayLike, argument: str) -> npt.NDArray[np.float64]:
    """`values` as a 1-D float array, refusing NaN and infinities, which no rank can place."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise QaInputError(argument, "must be a sequence of numbers") from exc
    if array.ndim != 1:
        raise QaInputError(argument, "must be one-dimensional")
    if not np.all(np.isfinite(array)):
        raise QaInputError(argument, "must hold finite numbers only (no NaN or infinity)")
    return array


def _scored(scores: npt.ArrayLike,
            labels: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Scores and boolean labels of equal length, with both classes present."""
    values = finite_array(scores, "scores")
    raw = np.asarray(labels)
    if raw.ndim != 1 or raw.shape != values.shape:
        raise QaInputError("labels", "must be one-dimensional and as long as scores")
    if raw.dtype != np.bool_ and not np.isin(raw, (0, 1)).all():
        raise QaInputError("labels", "must be booleans or 0/1")
    truth = raw.astype(np.bool_)
    if truth.all() or not truth.any():
        raise QaInputError("labels", "need at least one positive and one negative")
    return values, truth


def _midranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of their ranks."""
    _, inverse, tie_sizes = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(tie_sizes)
    midrank = last_rank - (tie_sizes - 1) / 2.0
    return np.asarray(midrank[inverse], dtype=np.float64)


def auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve as the Mann-Whitney probability that a positive outscores a
    negative, ties counting half; computed from ranks, so a million scores are cheap."""
    values, truth = _scored(scores, labels)
    ranks = _midranks(values)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    u = float(ranks[truth].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def auc_from_histograms(positive_counts: Sequence[int],
                        negative_counts: Sequence[int]) -> float:
    """AUC from per-bin counts of positives and negatives (bins in increasing score order),
    as SQL can count them; cases in the same bin count as ties, so this is the AUC of the
    binned score and slightly below the exact one."""
    pos = _count_array(positive_counts, "positive_counts")
    neg = _count_array(negative_counts, "negative_counts")
    if pos.shape != neg.shape:
        raise QaInputError("negative_counts", "must have as many bins as positive_counts")
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        raise QaInputError("counts", "need at least one positive and one negative")
    negatives_below = np.cumsum(neg) - neg
    wins = float(np.sum(pos * (negatives_below + neg / 2.0)))
    return wins / (n_pos * n_neg)


def _count_array(counts: Sequence[int], argument: str) -> npt.NDArray[np.float64]:
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise QaInputError(argument, "must be a non-empty sequence of counts")
    if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array != np.round(array)):
        raise QaInputError(argument, "must hold whole counts >= 0")
    return array


def hanley_mcneil(area: float, n_positive: int, n_negative: int,
                  confidence: float = 0.95) -> tuple[float, float, float]:
    """(area, low, high): the normal interval with Hanley & McNeil's (1982) standard error,
    which needs only the area and the class sizes, so it serves SQL-binned inputs too."""
    z = z_for(confidence)
    if not 0.0 <= area <= 1.0:
        raise QaInputError("area", "must lie between 0 and 1")
    if n_positive < 1 or n_negative < 1:
        raise QaInputError("n_positive, n_negative", "must both be at least 1")
    q1 = area / (2.0 - area)
    q2 = 2.0 * area * area / (1.0 + area)
    variance = (area * (1.0 - area) + (n_positive - 1) * (q1 - area * area)
                + (n_negative - 1) * (q2 - area * area)) / (n_positive * n_negative)
    half = z * math.sqrt(max(variance, 0.0))
    return area, max(area - half, 0.0), min(area + half, 1.0)


def auc_interval(scores: npt.ArrayLike, labels: npt.ArrayLike,
                 confidence: float = 0.95) -> tuple[float, float, float]:
    """(auc, low, high) for raw scores; see `hanley_mcneil`."""
    values, truth = _scored(scores, labels)
    n_pos = int(truth.sum())
    return hanley_mcneil(auc(values, truth), n_pos, truth.size - n_pos, confidence)


def roc_points(scores: npt.ArrayLike,
               labels: npt.ArrayLike) -> list[tuple[float, float, float]]:
    """(threshold, fpr, tpr) for calling `score >= threshold` positive, as model cards do,
    at every distinct score from the highest down; the first point, threshold +inf, calls
    nothing positive (0, 0), so the curve starts at the origin and ends at (1, 1)."""
    values, truth = _scored(scores, labels)
    order = np.argsort(-values, kind="stable")
    ordered, hits = values[order], truth[order]
    last_of_tie = np.r_[ordered[1:] != ordered[:-1], True]
    tps = np.cumsum(hits)[last_of_tie]
    fps = np.cumsum(~hits)[last_of_tie]
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    points = [(math.inf, 0.0, 0.0)]
    points += [(float(t), int(f) / n_neg, int(p) / n_pos)
               for t, f, p in zip(ordered[last_of_tie], fps, tps, strict=True)]
    return points
