"""Intercept recalibration (`training.recalibrate: valid`): after training, move a model's global bias so
that its mean prediction on a split equals that split's positive rate.

A positive rate that drifts between the train rows and the newest rows shifts every logit by about the same
amount; the ranking (AUC) survives, the probabilities do not (calibration = mean prediction / observed
rate drifts away from 1). One scalar fitted on the valid split, the labelled rows closest to serving time,
is the correction that cannot hurt the ranking: adding b to every logit is monotone. b solves
sum w * sigmoid(logit(p) + b) = sum w * y, the maximum-likelihood intercept shift (Newton's method on the
convex logloss in b).
"""

from __future__ import annotations

import numpy as np

MAX_ITERATIONS = 100


def logits(predictions) -> np.ndarray:
    """log(p / (1 - p)) in float64, p clipped to [1e-12, 1 - 1e-12]."""
    p = np.clip(np.asarray(predictions, dtype=np.float64).ravel(), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def shifted(predictions, shift: float) -> np.ndarray:
    """sigmoid(logit(p) + shift): what the model predicts once its global bias moved by `shift`."""
    return 1.0 / (1.0 + np.exp(-(logits(predictions) + shift)))


def intercept_shift(predictions, labels, weights=None) -> float | None:
    """The logit shift b making the weighted mean of sigmoid(logit(p) + b) equal the weighted positive rate;
    None when the rows hold one class only (no finite shift)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    positives, total = float(np.dot(w, y)), float(w.sum())
    if not 0 < positives < total:
        return None
    z, b = logits(predictions), 0.0
    for _ in range(MAX_ITERATIONS):
        q = 1.0 / (1.0 + np.exp(-(z + b)))
        gradient, curvature = float(np.dot(w, q)) - positives, float(np.dot(w, q * (1 - q)))
        step = gradient / max(curvature, 1e-12)
        b -= float(np.clip(step, -5.0, 5.0))  # a damped step: far from the root the curvature is tiny
        if abs(step) < 1e-10:
            break
    return b


def predict_split(model, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predictions, labels, weights) of a (features, label, weight) dataset, batch by batch."""
    predictions, labels, weights = [], [], []
    for features, label, weight in dataset:
        predictions.append(np.asarray(model(features, training=False)).ravel())
        labels.append(np.asarray(label).ravel())
        weights.append(np.asarray(weight).ravel())
    return np.concatenate(predictions), np.concatenate(labels), np.concatenate(weights)


def recalibrate(model, dataset) -> dict:
    """Shift `model`'s `global_bias` (training/layers.py probability) so that its weighted mean prediction on
    `dataset` equals the dataset's weighted positive rate; what it did, for the model's summary."""
    predictions, labels, weights = predict_split(model, dataset)
    shift = intercept_shift(predictions, labels, weights)
    done = {
        "split": "valid",
        "rows": int(len(labels)),
        "positive_rate": float(np.dot(weights, labels) / weights.sum()),
        "mean_prediction_before": float(np.dot(weights, predictions) / weights.sum()),
        "logit_shift": shift,
    }
    if shift is not None:
        bias = model.get_layer("global_bias").bias
        bias.assign(bias + np.float32(shift))
    return done
