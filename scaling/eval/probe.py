"""Scoring representations on a task: a linear probe, AUROC with a bootstrap interval, AUPRC.

No JAX here: features in, scores out. The probe's regularisation is chosen on the tuning split and
scored once on held_out. A cohort with fewer than `MIN_CLASS` positives or negatives in a split is
reported as too small, with its counts, instead of a number.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MIN_CLASS = 20
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
BOOTSTRAP = 1000


@dataclass(frozen=True)
class Split:
    """Features and labels of one split."""

    x: np.ndarray
    y: np.ndarray


def class_counts(splits: dict[str, Split]) -> dict[str, dict[str, int]]:
    return {name: {"positives": int(s.y.sum()), "negatives": int(len(s.y) - s.y.sum())} for name, s in splits.items()}


def too_small(splits: dict[str, Split]) -> str | None:
    """Why the cohort cannot be scored, or None."""
    for name, counts in class_counts(splits).items():
        if min(counts.values()) < MIN_CLASS:
            return (
                f"too small to score: the {name} split has {counts['positives']} positives and "
                f"{counts['negatives']} negatives (at least {MIN_CLASS} of each are needed)"
            )
    return None


def auroc_interval(
    y: np.ndarray, score: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP
) -> tuple[float, float, float]:
    """AUROC and its 95% percentile bootstrap interval (rows resampled with replacement, seeded).

    All resamples at once: each resample counts its picks per group of equal scores (in score order), positives
    and negatives apart, and its AUROC is the Mann-Whitney statistic over those counts (ties count half). Two
    integer bincounts over the picks, no [resamples, rows] float matrices: the same numbers in 0.3-0.6x the time."""
    y = np.asarray(y).astype(bool)
    point = float(roc_auc_score(y, score))
    n = len(y)
    _, group = np.unique(np.asarray(score), return_inverse=True)  # each row's group of equal scores, in score order
    groups = int(group.max()) + 1
    picks = np.random.default_rng(seed).integers(0, n, (resamples, n))
    cells = (group[picks] + np.arange(resamples)[:, None] * groups).ravel()  # (resample, group) of each pick
    picked_positive = y[picks].ravel()
    positives = np.bincount(cells[picked_positive], minlength=resamples * groups).reshape(resamples, groups)
    negatives = np.bincount(cells[~picked_positive], minlength=resamples * groups).reshape(resamples, groups)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1).astype(np.float64) * negatives.sum(axis=1)
    valid = pairs > 0
    auc = (positives * (below + 0.5 * negatives)).sum(axis=1)[valid] / pairs[valid]
    lo, hi = np.percentile(auc, [2.5, 97.5])
    return point, float(min(lo, point)), float(max(hi, point))


def score(y: np.ndarray, risk: np.ndarray, seed: int = 0) -> dict[str, float]:
    auroc, lo, hi = auroc_interval(y, risk, seed)
    return {
        "auroc": auroc,
        "auroc_lo": lo,
        "auroc_hi": hi,
        "auprc": float(average_precision_score(y, risk)),
        "n": int(len(y)),
        "positives": int(y.sum()),
    }


def linear_probe(splits: dict[str, Split], seed: int = 0) -> dict:
    """Logistic regression on standardised features: C chosen by tuning AUROC, scored on held_out."""
    return fit_probe(splits, seed)[0]


def fit_probe(splits: dict[str, Split], seed: int = 0) -> tuple[dict, np.ndarray | None]:
    """The linear probe's scores, and its predicted probability for each held_out row (None when not scored)."""
    reason = too_small(splits)
    if reason:
        return {"status": "too small", "reason": reason, "counts": class_counts(splits)}, None
    best = None
    for c in C_GRID:
        # Newton's method with a Cholesky solve: the features are few (the model's width), so each step is
        # exact and a fit converges in a handful of steps, where lbfgs took seconds and stopped short.
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, solver="newton-cholesky", max_iter=100))
        model.fit(splits["train"].x, splits["train"].y)
        tuning = roc_auc_score(splits["tuning"].y, model.predict_proba(splits["tuning"].x)[:, 1])
        if best is None or tuning > best[0]:
            best = (tuning, c, model)
    _, c, model = best
    held_out = splits["held_out"]
    # Scored at float32, the precision the predictions file keeps, so a scorer reading it finds the same AUROC.
    probability = model.predict_proba(held_out.x)[:, 1].astype(np.float32)
    return {"status": "ok", "C": c, **score(held_out.y, probability, seed)}, probability
