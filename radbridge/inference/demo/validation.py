"""Figures for a binary classifier on a held-out set: sensitivity and specificity at a
threshold with Wilson 95% intervals, and the AUC with a seeded, stratified bootstrap 95%
interval. Small synthetic sets make wide intervals; the report says how wide."""

from __future__ import annotations

from math import sqrt

import numpy as np
from numpy.typing import ArrayLike

Z95 = 1.959963984540054


def wilson(successes: int, total: int) -> tuple[float, float]:
    """Wilson score interval for a proportion (95%)."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + Z95 ** 2 / total
    centre = (p + Z95 ** 2 / (2 * total)) / denominator
    half = Z95 * sqrt(p * (1 - p) / total + Z95 ** 2 / (4 * total ** 2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve: the chance that a positive outscores a negative (ties
    count half)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    positives, negatives = s[y], s[~y]
    if not len(positives) or not len(negatives):
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def auc_interval(scores: ArrayLike, labels: ArrayLike, *, resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (95%), resampling positives and negatives apart."""
    rng = np.random.default_rng(seed)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    positives, negatives = s[y], s[~y]
    values = []
    for _ in range(resamples):
        p = rng.choice(positives, len(positives))
        n = rng.choice(negatives, len(negatives))
        values.append(auc(np.concatenate([p, n]), [True] * len(p) + [False] * len(n)))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def best_threshold(scores: ArrayLike, labels: ArrayLike) -> float:
    """The threshold that maximises sensitivity + specificity on a (training) set,
    halfway between neighbouring scores (a study's probability is the peak of its heat
    map, so the scores crowd towards 1 and the threshold may be close to it)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    ordered = np.unique(s)
    candidates = np.concatenate([[0.5], (ordered[:-1] + ordered[1:]) / 2])
    best, best_j = 0.5, -1.0
    for t in candidates:
        j = float(((s >= t) & y).sum() / max(y.sum(), 1) + ((s < t) & ~y).sum()
                  / max((~y).sum(), 1))
        if j > best_j + 1e-9:
            best, best_j = float(t), j
    return float(np.clip(round(best, 6), 0.0, 1.0))


def report(scores: ArrayLike, labels: ArrayLike, threshold: float, *,
           seed: int = 0, resamples: int = 1000) -> dict[str, object]:
    """Sensitivity, specificity and AUC with their intervals, JSON-ready."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    true_positive = int(((s >= threshold) & y).sum())
    true_negative = int(((s < threshold) & ~y).sum())
    positives, negatives = int(y.sum()), int((~y).sum())
    low, high = auc_interval(s, y, resamples=resamples, seed=seed)
    sens_ci, spec_ci = wilson(true_positive, positives), wilson(true_negative, negatives)
    return {
        "threshold": threshold,
        "positives": positives, "negatives": negatives,
        "true_positives": true_positive, "true_negatives": true_negative,
        "sensitivity": round(true_positive / max(positives, 1), 4),
        "sensitivity_ci95": [round(v, 4) for v in sens_ci],
        "specificity": round(true_negative / max(negatives, 1), 4),
        "specificity_ci95": [round(v, 4) for v in spec_ci],
        "auc": round(auc(s, y), 4),
        "auc_ci95": [round(low, 4), round(high, 4)],
        "auc_ci_method": f"percentile bootstrap, {resamples} stratified resamples, "
                         f"seed {seed}",
        "proportion_ci_method": "Wilson score interval",
    }
