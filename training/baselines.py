"""What the models are measured against (jobs/evaluate_models.py does the I/O): scoring the test split,
the baselines (item popularity from the train split, XGBoost alone through the same in-graph GBDT input
as GBDT+LR), the quality bars and, for a missed bar, why (the AUC's standard error, Hanley & McNeil)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features.feature_spec import load_spec

KEYS = {"sample_id": "string", "user_id": "int64", "item_id": "int64"}  # carried beside each test prediction


def score_test(model, shards: Path, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """The model's probability for every test row, with the row keys and labels, in shard order."""
    import tensorflow as tf

    from training.dataset import make_dataset
    from training.inputs import model_inputs

    dataset = make_dataset(
        shards, "test", model_inputs(load_spec()), batch_size, extra={k: getattr(tf, v) for k, v in KEYS.items()}
    )
    parts: dict[str, list] = {k: [] for k in (*KEYS, "label", "prediction")}
    for features, label, _ in dataset:
        for key in KEYS:
            parts[key].append(features.pop(key).numpy())
        parts["label"].append(label.numpy())
        parts["prediction"].append(np.asarray(model(features, training=False)).reshape(-1))
    return {k: np.concatenate(v) for k, v in parts.items()}


def item_popularity(files: list[Path]) -> dict[int, float]:
    """Positives per item in the given Parquet files (the train split, or a replay window): an Arrow
    group-by over two columns."""
    import pyarrow.dataset as ds

    table = ds.dataset([str(p) for p in files], format="parquet").to_table(columns=["item_id", "label"])
    counts = table.group_by("item_id").aggregate([("label", "sum")])
    return dict(zip(counts.column("item_id").to_pylist(), counts.column("label_sum").to_pylist()))


def xgboost_probability(gbdt_root: Path, gbdt_features: dict, transforms: dict, shards: Path) -> np.ndarray:
    """The booster alone on the test rows, fed by the same in-graph GBDT input the GBDT+LR model uses."""
    import keras
    import xgboost as xgb

    from training.feature_layers import FeatureEncoders

    encoders = FeatureEncoders(load_spec(), transforms)
    matrix = keras.Model(encoders.inputs, encoders.gbdt_matrix(gbdt_features["inputs"]))
    booster = xgb.Booster()
    booster.load_model(str(gbdt_root / "booster.json"))
    return score_test(lambda f, training: booster.predict(xgb.DMatrix(np.asarray(matrix(f)), missing=np.nan)), shards)[
        "prediction"
    ]


def quality_bars(results: dict, lift: float, model_names: tuple[str, ...]) -> list[dict]:
    """The evaluation's bars: every model >= item popularity + lift, gbdt_lr >= lr, the best model >=
    XGBoost alone; `met` says whether each holds (model_names: the registry, in its order)."""
    models = [m for m in model_names if m in results]
    popularity = results["baseline: item popularity"]["auc"]
    bars = [
        {"bar": f"{m} test AUC >= item popularity + {lift}", "value": results[m]["auc"], "target": popularity + lift}
        for m in models
    ]
    if "gbdt_lr" in results and "lr" in results:
        bars.append(
            {"bar": "gbdt_lr test AUC >= lr", "value": results["gbdt_lr"]["auc"], "target": results["lr"]["auc"]}
        )
    if models and "baseline: xgboost" in results:
        best = max(models, key=lambda m: results[m]["auc"] or 0.0)
        bars.append(
            {
                "bar": f"best model ({best}) test AUC >= xgboost alone",
                "value": results[best]["auc"],
                "target": results["baseline: xgboost"]["auc"],
            }
        )
    for bar in bars:
        bar["met"] = bar["value"] is not None and bar["target"] is not None and bar["value"] >= bar["target"]
    return bars


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC measured on this many positives/negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    return float(np.sqrt(variance / (positives * negatives)))


def explain_miss(bar: dict, labels: np.ndarray, summaries: dict, gbdt_metrics: dict) -> str:
    """Why a quality bar was missed, from what the run measured."""
    positives = int(labels.sum())
    error = auc_standard_error(bar["value"], positives, len(labels) - positives)
    why = (
        f"the gap {bar['target'] - bar['value']:.4f} is {(bar['target'] - bar['value']) / error:.1f} standard "
        f"errors of a test AUC on {len(labels)} rows (±{error:.4f}, Hanley-McNeil)"
    )
    if bar["bar"].startswith("gbdt_lr"):
        train, valid = gbdt_metrics["train"]["auc"], gbdt_metrics["valid"]["auc"]
        why += (
            f"; the trees were fitted on the same train rows the LR learns from (XGBoost AUC train {train:.4f} "
            f"vs valid {valid:.4f}), so the leaf one-hots fit train better than later days"
        )
    valid = {m: s["best_val_auc"] for m, s in summaries.items()}
    return (
        why
        + "; hyperparameters were chosen on valid only (best valid AUC "
        + ", ".join(f"{m} {v:.4f}" for m, v in valid.items())
        + ")"
    )


def rank_scaled(values: np.ndarray) -> np.ndarray:
    """A score in (0, 1) with the same order, so ranking metrics apply to a count."""
    return values / (values.max() + 1.0) if len(values) else values
