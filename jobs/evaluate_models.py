"""Evaluate the trained models on the test split against baselines and write the report.

    recpipe evaluate --config conf/demo.yaml [--samples-version N]

Scores the test shards with every trained model (<warehouse>/_artifacts/models/<model>/v<N>/model.keras)
and three baselines — the global train rate, item popularity (the item's positives in train) and
XGBoost alone (the GBDT booster) — then writes <warehouse>/_artifacts/evaluation/v<N>/:
    metrics.json        every metric of every model and baseline, the quality bars and the data versions
    report.md           comparison table, quality bars, ROC / PR / calibration / learning-curve plots (PNG)
    predictions.parquet test rows (sample_id, user_id, item_id, label) with each model's probability
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # started as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from features.errors import PipelineInputError
from features.feature_spec import load_spec
from jobs import artifacts
from jobs.run_info import new_run
from jobs.settings import MODEL_NAMES, Settings, as_settings
from jobs.train_models import load_training_inputs

KEYS = {"sample_id": "string", "user_id": "int64", "item_id": "int64"}


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


def item_popularity(shards: Path) -> dict[int, float]:
    """Positives per item in the train split (Arrow group-by over two columns of the shards)."""
    import pyarrow.dataset as ds

    from training.dataset import split_files

    table = ds.dataset([str(p) for p in split_files(shards, "train")], format="parquet").to_table(
        columns=["item_id", "label"]
    )
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


def quality_bars(results: dict, lift: float) -> list[dict]:
    models = [m for m in MODEL_NAMES if m in results]
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


def evaluate(config: Settings | dict, samples_version: int | None = None) -> dict:
    import keras
    import pandas as pd

    import training.leaf_encoder  # noqa: F401  (registers the GBDT layer for loading)
    from training.metrics import binary_metrics
    from training.report import write_report

    settings = as_settings(config)
    warehouse = settings.paths.warehouse
    inputs = load_training_inputs(warehouse, samples_version, needs_gbdt=True)
    version, shards = inputs["version"], inputs["source"] / "parquet"
    trained = [m for m in MODEL_NAMES if (artifacts.model_dir(warehouse, m, version) / "model.keras").exists()]
    if not trained:
        raise PipelineInputError(f"no trained models for samples v{version}: run recpipe train first")
    train_split = inputs["manifest"]["splits"]["train"]
    train_rate = train_split["positives"] / train_split["rows"]

    scores, histories = {}, {}
    for name in trained:
        directory = artifacts.model_dir(warehouse, name, version)
        scored = score_test(keras.saving.load_model(directory / "model.keras"), shards)
        scores[name] = scored["prediction"]
        histories[name] = json.loads((directory / "history.json").read_text())
    rows = scored
    popularity = item_popularity(shards)
    scores["baseline: global rate"] = np.full(len(rows["label"]), train_rate)
    scores["baseline: item popularity"] = np.array([popularity.get(int(i), 0.0) for i in rows["item_id"]], float)
    scores["baseline: xgboost"] = xgboost_probability(
        artifacts.gbdt_dir(warehouse, version), inputs["gbdt"]["features"], inputs["transforms"], shards
    )

    results = {}
    for name, prediction in scores.items():
        calibrated = name != "baseline: item popularity"  # a count, not a probability
        metrics = binary_metrics(
            rows["label"], prediction if calibrated else _rank_scaled(prediction), train_rate, user_ids=rows["user_id"]
        )
        if not calibrated:
            metrics.update(logloss=None, normalized_entropy=None, calibration=None, mean_prediction=None)
        results[name] = metrics
    bars = quality_bars(results, settings.evaluation.min_auc_lift_over_popularity)
    summaries = {
        m: json.loads((artifacts.model_dir(warehouse, m, version) / "summary.json").read_text()) for m in trained
    }
    for bar in bars:
        if not bar["met"] and bar["value"] is not None and bar["target"] is not None:
            bar["why"] = explain_miss(bar, rows["label"], summaries, inputs["gbdt"]["metrics"]["metrics"])
    notes = [
        f"{'met' if b['met'] else 'MISSED'}: {b['bar']} ({_fmt(b['value'])} vs {_fmt(b['target'])})"
        + (f" — why: {b['why']}" if b.get("why") else "")
        for b in bars
    ]
    notes.append(
        f"test split: {len(rows['label'])} rows, positive rate {rows['label'].mean():.4f}; "
        f"train positive rate {train_rate:.4f}; cut points {', '.join(inputs['manifest']['cut_points'])}"
    )

    target = artifacts.evaluation_dir(warehouse, version)
    staged = artifacts.staging_dir(target)
    curves = {
        n: {"labels": rows["label"], "predictions": p} for n, p in scores.items() if n in trained or "xgboost" in n
    }
    write_report(staged, results, curves, histories, notes, f"Model comparison on the test split (samples v{version})")
    pd.DataFrame({**{k: rows[k] for k in (*KEYS, "label")}, **{n: scores[n] for n in trained}}).to_parquet(
        staged / "predictions.parquet", index=False
    )
    run = new_run(
        "evaluate",
        samples_version=version,
        input_versions={"samples": version, **inputs["manifest"].get("input_versions", {})},
    )
    summary = {**run, "results": results, "quality_bars": bars, "models": trained, "train_positive_rate": train_rate}
    artifacts.write_json_atomically(staged / "metrics.json", summary)
    artifacts.replace_dir(staged, target)
    return {**summary, "report": str(target / "report.md")}


def _rank_scaled(values: np.ndarray) -> np.ndarray:
    """A score in (0, 1) with the same order, so ranking metrics apply to a count."""
    return values / (values.max() + 1.0) if len(values) else values


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_summary(summary: dict) -> str:
    from training.report import format_table

    lines = [format_table(summary["results"])]
    lines += [
        f"{'met   ' if b['met'] else 'MISSED'} {b['bar']}: {_fmt(b['value'])} vs {_fmt(b['target'])}"
        + (f"\n       why: {b['why']}" if b.get("why") else "")
        for b in summary["quality_bars"]
    ]
    lines.append(f"report: {summary['report']}")
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
