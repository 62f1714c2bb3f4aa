"""Offline evaluation metrics for binary (CTR-style) ranking models, on numpy arrays.

`binary_metrics` gives the numbers of one model on one test set: ROC AUC, PR-AUC (average precision),
logloss, normalized entropy (NE, He et al. 2014, "Practical Lessons from Predicting Clicks on Ads at
Facebook"), calibration and, with user ids, GAUC (per-user AUC weighted by the user's sample count or
weight sum). `roc_points`, `pr_points` and `calibration_curve` return the arrays the report plots.

NE = logloss(predictions) / logloss(constant train_positive_rate), both on the same labels (and weights),
so the constant background-rate predictor has NE exactly 1 and anything better is below 1.
Metrics that need both classes (auc, pr_auc, gauc) are None when only one class has weight.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, log_loss, precision_recall_curve, roc_auc_score, roc_curve

LOGLOSS_EPS = 1e-7


def _as_inputs(labels: Any, predictions: Any, weights: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 labels (0/1), predictions and weights (ones when None), checked for shape and values."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(predictions, dtype=np.float64).ravel()
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not (len(y) == len(p) == len(w)):
        raise ValueError(f"length mismatch: labels {len(y)}, predictions {len(p)}, weights {len(w)}")
    if len(y) == 0:
        raise ValueError("no rows to evaluate")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    if not np.isfinite(p).all():
        raise ValueError("predictions contain NaN or inf")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return y, p, w


def _has_both_classes(y: np.ndarray, w: np.ndarray) -> bool:
    return bool(w[y == 1].sum() > 0 and w[y == 0].sum() > 0)


def _mean_logloss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    """sklearn's log loss (weighted mean); the Spark job's distributed one (features.gbdt.binary_metrics)
    is tested against it."""
    return float(log_loss(y, np.clip(p, LOGLOSS_EPS, 1 - LOGLOSS_EPS), sample_weight=w, labels=[0, 1]))


def normalized_entropy(labels: Any, predictions: Any, train_positive_rate: float, weights: Any = None) -> float:
    """logloss of the predictions / logloss of always predicting `train_positive_rate` on the same labels."""
    if not 0.0 < train_positive_rate < 1.0:
        raise ValueError(f"train_positive_rate must be in (0, 1), got {train_positive_rate}")
    y, p, w = _as_inputs(labels, predictions, weights)
    background = np.full_like(p, train_positive_rate)
    return _mean_logloss(y, p, w) / _mean_logloss(y, background, w)


def _user_codes_sorted(user_ids: Any, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense user codes and the row order sorting by (user, prediction)."""
    _, user_code = np.unique(np.asarray(user_ids).ravel(), return_inverse=True)
    user_code = user_code.ravel()
    return user_code, np.lexsort((predictions, user_code))


def _group_starts(is_start: np.ndarray) -> np.ndarray:
    """For each position, the index of the first position of its group (groups begin where is_start)."""
    return np.maximum.accumulate(np.where(is_start, np.arange(len(is_start)), 0))


def _per_user_auc_numerators(
    user: np.ndarray, score: np.ndarray, pos_w: np.ndarray, neg_w: np.ndarray, n_users: int
) -> np.ndarray:
    """Mann-Whitney sums per user on rows sorted by (user, score): sum over positives of
    weight * (negative weight strictly below + half the negative weight tied with it)."""
    tie_start = np.r_[True, (user[1:] != user[:-1]) | (score[1:] != score[:-1])]
    tie_id = np.cumsum(tie_start) - 1
    tie_user = user[tie_start]
    tie_neg = np.bincount(tie_id, weights=neg_w)
    tie_pos = np.bincount(tie_id, weights=pos_w)
    neg_before = np.cumsum(tie_neg) - tie_neg  # exclusive running sum over all users
    user_start = _group_starts(np.r_[True, tie_user[1:] != tie_user[:-1]])
    neg_below = neg_before - neg_before[user_start]  # restart the running sum at each user
    return np.bincount(tie_user, weights=tie_pos * (neg_below + 0.5 * tie_neg), minlength=n_users)


def gauc(labels: Any, predictions: Any, user_ids: Any, weights: Any = None) -> tuple[float | None, int]:
    """(GAUC, number of users used): per-user ROC AUC averaged with the user's row count (or weight sum)
    as weight, over users having weight in both classes. (None, 0) when no user has both classes.

    Vectorised: one sort by (user, prediction), ties share credit (average ranks), as roc_auc_score does."""
    y, p, w = _as_inputs(labels, predictions, weights)
    user_code, order = _user_codes_sorted(user_ids, p)
    if len(user_code) != len(y):
        raise ValueError(f"length mismatch: labels {len(y)}, user_ids {len(user_code)}")
    user, score, y_sorted, w_sorted = user_code[order], p[order], y[order], w[order]
    n_users = int(user_code.max()) + 1
    pos_w, neg_w = w_sorted * y_sorted, w_sorted * (1 - y_sorted)
    numerators = _per_user_auc_numerators(user, score, pos_w, neg_w, n_users)
    user_pos = np.bincount(user, weights=pos_w, minlength=n_users)
    user_neg = np.bincount(user, weights=neg_w, minlength=n_users)
    usable = (user_pos > 0) & (user_neg > 0)
    if not usable.any():
        return None, 0
    user_auc = numerators[usable] / (user_pos[usable] * user_neg[usable])
    user_weight = np.bincount(user, weights=w_sorted, minlength=n_users)[usable]
    return float(np.average(user_auc, weights=user_weight)), int(usable.sum())


def _ranking_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> dict[str, float | None]:
    if not _has_both_classes(y, w):
        return {"auc": None, "pr_auc": None}
    return {
        "auc": float(roc_auc_score(y, p, sample_weight=w)),
        "pr_auc": float(average_precision_score(y, p, sample_weight=w)),
    }


def binary_metrics(
    labels: Any, predictions: Any, train_positive_rate: float, user_ids: Any = None, weights: Any = None
) -> dict[str, Any]:
    """Evaluation numbers of one model on one test set (weighted when `weights` is given).

    Keys: rows, positive_rate, mean_prediction, auc, pr_auc, logloss, normalized_entropy, calibration
    (mean_prediction / positive_rate, None when there are no positives); plus gauc and gauc_users
    only when `user_ids` is given. auc, pr_auc and gauc are None when a class is missing."""
    y, p, w = _as_inputs(labels, predictions, weights)
    positive_rate = float(np.average(y, weights=w))
    mean_prediction = float(np.average(p, weights=w))
    result: dict[str, Any] = {
        "rows": int(len(y)),
        "positive_rate": positive_rate,
        "mean_prediction": mean_prediction,
        **_ranking_metrics(y, p, w),
        "logloss": _mean_logloss(y, p, w),
        "normalized_entropy": normalized_entropy(y, p, train_positive_rate, w),
        "calibration": mean_prediction / positive_rate if positive_rate > 0 else None,
    }
    if user_ids is not None:
        result["gauc"], result["gauc_users"] = gauc(y, p, user_ids, w)
    return result


def _require_both_classes(y: np.ndarray, w: np.ndarray) -> None:
    if not _has_both_classes(y, w):
        raise ValueError("curve needs both classes in the labels")


def roc_points(labels: Any, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of the ROC curve; ValueError with one class only."""
    y, p, w = _as_inputs(labels, predictions)
    _require_both_classes(y, w)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
    return fpr, tpr


def pr_points(labels: Any, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    """(recalls, precisions) of the precision-recall curve; ValueError with one class only."""
    y, p, w = _as_inputs(labels, predictions)
    _require_both_classes(y, w)
    precision, recall, _ = precision_recall_curve(y, p, drop_intermediate=True)
    return recall, precision


def calibration_curve(labels: Any, predictions: Any, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean prediction, observed positive rate, row count) per equal-frequency bin of the predictions.

    Rows sorted by prediction are cut into min(bins, rows) consecutive chunks whose sizes differ by at most
    one, so tied predictions may fall into two neighbouring bins; bins come in increasing prediction order."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y, p, _ = _as_inputs(labels, predictions)
    order = np.argsort(p, kind="stable")
    chunks = np.array_split(order, min(bins, len(order)))
    mean_prediction = np.array([p[c].mean() for c in chunks])
    observed_rate = np.array([y[c].mean() for c in chunks])
    counts = np.array([len(c) for c in chunks], dtype=np.int64)
    return mean_prediction, observed_rate, counts
