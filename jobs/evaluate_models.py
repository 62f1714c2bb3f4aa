"""Evaluate the trained models on the test split against baselines and write the report.

    recpipe evaluate --config conf/demo.yaml [--samples-version N]

Scores the test shards with every trained model (<home>/_artifacts/models/<model>/v<N>/model.keras)
and three baselines — the global train rate, item popularity (the item's positives in train) and
XGBoost alone (the GBDT booster) — then writes <home>/_artifacts/evaluation/v<N>/:
    metrics.json        every metric of every model and baseline, the quality bars and the data versions
    report.md           comparison table, quality bars, default vs tuned hyperparameters, ROC / PR / calibration / learning-curve plots (PNG)
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
from jobs import artifacts
from jobs.run_info import new_run
from jobs.settings import MODEL_NAMES, Settings, as_settings
from jobs.train_models import load_training_inputs
from training.baselines import (
    KEYS,
    explain_miss,
    item_popularity,
    quality_bars,
    rank_scaled,
    score_test,
    xgboost_probability,
)
from training.tuning import XGBOOST


def evaluate(config: Settings | dict, samples_version: int | None = None) -> dict:
    import pandas as pd

    from training.metrics import binary_metrics
    from training.report import write_report
    from training.saved_models import load_trained

    settings = as_settings(config)
    home = settings.paths.artifacts_home()
    inputs = load_training_inputs(home, samples_version, needs_gbdt=True)
    version, shards = inputs["version"], inputs["source"] / "parquet"
    trained = [m for m in MODEL_NAMES if (artifacts.model_dir(home, m, version) / "model.keras").exists()]
    if not trained:
        raise PipelineInputError(f"no trained models for samples v{version}: run recpipe train first")
    train_split = inputs["manifest"]["splits"]["train"]
    train_rate = train_split["positives"] / train_split["rows"]

    scores, histories = {}, {}
    for name in trained:
        directory = artifacts.model_dir(home, name, version)
        scored = score_test(load_trained(directory / "model.keras"), shards)
        scores[name] = scored["prediction"]
        histories[name] = json.loads((directory / "history.json").read_text())
    rows = scored
    from training.dataset import split_files

    popularity = item_popularity(split_files(shards, "train"))
    scores["baseline: global rate"] = np.full(len(rows["label"]), train_rate)
    scores["baseline: item popularity"] = np.array([popularity.get(int(i), 0.0) for i in rows["item_id"]], float)
    scores["baseline: xgboost"] = xgboost_probability(
        artifacts.gbdt_dir(home, version), inputs["gbdt"]["features"], inputs["transforms"], shards
    )

    results = {}
    for name, prediction in scores.items():
        calibrated = name != "baseline: item popularity"  # a count, not a probability
        metrics = binary_metrics(
            rows["label"], prediction if calibrated else rank_scaled(prediction), train_rate, user_ids=rows["user_id"]
        )
        if not calibrated:
            metrics.update(logloss=None, normalized_entropy=None, calibration=None, mean_prediction=None)
        results[name] = metrics
    bars = quality_bars(results, settings.evaluation.min_auc_lift_over_popularity, MODEL_NAMES)
    summaries = {m: json.loads((artifacts.model_dir(home, m, version) / "summary.json").read_text()) for m in trained}
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
    drift = drift_note(inputs["manifest"]["splits"], float(rows["label"].mean()), summaries)
    notes.append(drift)
    tuned = tuning_status(home, version, {**summaries, XGBOOST: inputs["gbdt"]["metrics"]})
    notes.append(tuning_note(tuned))

    target = artifacts.evaluation_dir(home, version)
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
    summary = {
        **run,
        "results": results,
        "quality_bars": bars,
        "models": trained,
        "train_positive_rate": train_rate,
        "drift": drift,
        "tuning": tuned,
    }
    artifacts.write_json_atomically(staged / "metrics.json", summary)
    artifacts.replace_dir(staged, target)
    return {**summary, "report": str(target / "report.md")}


def drift_note(splits: dict, test_rate: float, summaries: dict) -> str:
    """The positive rate of each split, how far test's moved from train's, and which models were
    recalibrated on valid (training.recalibrate): a model keeps the rate it learned, so its calibration on
    test is about train rate / test rate unless its bias was moved."""
    train, valid = (splits[s]["positives"] / max(splits[s]["rows"], 1) for s in ("train", "valid"))
    recalibrated = sorted(m for m, summary in summaries.items() if summary.get("recalibration"))
    return (
        f"positive rate by split: train {train:.4f}, valid {valid:.4f}, test {test_rate:.4f} "
        f"(test / train {test_rate / train if train else float('nan'):.2f}); recalibrated on valid "
        f"(training.recalibrate): {', '.join(recalibrated) or 'none'}"
    )


def tuning_status(home: str, version: int, summaries: dict) -> list[dict]:
    """Default vs tuned for each model (and `xgboost`, the gbdt stage's booster, from its metrics.json): was
    it trained with `recpipe tune`'s choice (`tuned_from` in its summary), and the search's valid AUC of
    the defaults (trial 0) and of the choice when a search of this samples version exists."""
    from jobs.tune import tuning_file

    status = []
    for name, summary in summaries.items():
        used = summary.get("tuned_from")
        path = Path(used) if used and Path(used).exists() else tuning_file(home, version, name)
        entry = {"model": name, "trained_with_tuned": bool(used), "search": None}
        if path.exists():
            search = json.loads(path.read_text())
            entry["search"] = {
                "file": str(path),
                "trials": len(search["trials"]),
                "default_valid_auc": search["default"]["valid_auc"],
                "chosen_valid_auc": search["chosen"]["valid_auc"],
                "chosen_params": search["chosen"]["params"],
            }
        status.append(entry)
    return status


def tuning_note(status: list[dict]) -> str:
    """One line: per model, tuned or configured, with the search's valid AUCs (defaults -> chosen)."""
    parts = []
    for entry in status:
        search = entry["search"]
        found = (
            f"{search['default_valid_auc']:.4f} -> {search['chosen_valid_auc']:.4f} in {search['trials']} trials"
            if search
            else ""
        )
        if entry["trained_with_tuned"]:
            parts.append(f"{entry['model']} tuned ({found})" if search else f"{entry['model']} tuned")
        elif search:
            parts.append(f"{entry['model']} configured (a search found {found}; not used)")
        else:
            parts.append(f"{entry['model']} configured (no search)")
    return "hyperparameters (recpipe tune, valid AUC defaults -> chosen): " + "; ".join(parts)


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
    lines.append(summary["drift"])
    if "tuning" in summary:
        lines.append(tuning_note(summary["tuning"]))
    lines.append(f"report: {summary['report']}")
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
