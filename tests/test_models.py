"""The four TensorFlow models trained and evaluated by `recpipe run` on MovieLens 100K (rating >= 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from jobs import artifacts
from jobs.cli import main
from training.baselines import score_test
from training.saved_models import load_trained

REPO = Path(__file__).resolve().parents[1]
MODELS = ("lr", "gbdt_lr", "wide_deep", "deepfm")


@pytest.fixture(scope="module")
def evaluated(ml100k_warehouse):
    root = artifacts.artifacts_root(ml100k_warehouse.root) / "evaluation"
    version = max(int(p.name[1:]) for p in root.glob("v*"))
    directory = artifacts.evaluation_dir(ml100k_warehouse.root, version)
    return ml100k_warehouse.root, version, directory, json.loads((directory / "metrics.json").read_text())


def test_models_beat_the_baselines_and_the_quality_bars_are_reported(evaluated):
    _, _, _, metrics = evaluated
    results = metrics["results"]
    assert set(results) == {*MODELS, "baseline: global rate", "baseline: item popularity", "baseline: xgboost"}
    assert results["baseline: global rate"]["auc"] == 0.5
    assert results["baseline: global rate"]["normalized_entropy"] == pytest.approx(1.0)  # NE of the background rate
    popularity = results["baseline: item popularity"]["auc"]
    for (
        model
    ) in MODELS:  # the bar is +0.05 (met with 0.055 to 0.063 in README); slack for thread nondeterminism
        assert results[model]["auc"] >= popularity + 0.04, (model, results[model]["auc"], popularity)
        assert results[model]["normalized_entropy"] < 0.95
        assert 0.85 < results[model]["calibration"] < 1.15
        assert results[model]["gauc_users"] > 50 and 0.6 < results[model]["gauc"] < 1.0
    assert results["gbdt_lr"]["auc"] >= results["lr"]["auc"] - 0.01
    assert max(results[m]["auc"] for m in MODELS) >= results["baseline: xgboost"]["auc"] - 0.005
    # the bars of the issue, written out here from the results: +0.05 over popularity (conf/movielens.yaml),
    # GBDT+LR over LR, the best model over XGBoost alone; a missed bar says why in standard errors
    best = max(MODELS, key=lambda m: results[m]["auc"])
    expected = {f"{m} test AUC >= item popularity + 0.05": results[m]["auc"] >= popularity + 0.05 for m in MODELS}
    expected["gbdt_lr test AUC >= lr"] = results["gbdt_lr"]["auc"] >= results["lr"]["auc"]
    expected[f"best model ({best}) test AUC >= xgboost alone"] = (
        results[best]["auc"] >= results["baseline: xgboost"]["auc"]
    )
    assert {bar["bar"]: bar["met"] for bar in metrics["quality_bars"]} == expected
    for bar in metrics["quality_bars"]:
        assert bar["met"] or "standard errors" in bar["why"]


def test_xgboost_baseline_reproduces_the_gbdt_job(evaluated):
    warehouse, version, _, metrics = evaluated
    gbdt = json.loads((artifacts.gbdt_dir(warehouse, version) / "metrics.json").read_text())
    assert metrics["results"]["baseline: xgboost"]["auc"] == pytest.approx(gbdt["metrics"]["test"]["auc"], abs=1e-4)


def test_report_has_the_comparison_table_and_plots(evaluated):
    _, _, directory, _ = evaluated
    report = (directory / "report.md").read_text()
    for name in (*MODELS, "baseline: xgboost", "gbdt_lr test AUC >= lr"):
        assert name in report
    for image in ("roc.png", "pr.png", "calibration.png", "learning_curves.png"):
        assert (directory / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({image})" in report


def test_saved_models_reload_and_reproduce_the_evaluated_predictions(evaluated):
    warehouse, version, directory, _ = evaluated
    predictions = pd.read_parquet(directory / "predictions.parquet")
    shards = artifacts.samples_dir(warehouse, version) / "parquet"
    for model in MODELS:
        reloaded = load_trained(artifacts.model_dir(warehouse, model, version) / "model.keras")
        scored = score_test(reloaded, shards)
        assert scored["sample_id"].astype(str).tolist() == predictions["sample_id"].astype(str).tolist()
        np.testing.assert_allclose(scored["prediction"], predictions[model], atol=1e-6)
    gbdt_lr = load_trained(artifacts.model_dir(warehouse, "gbdt_lr", version) / "model.keras")
    assert gbdt_lr.get_layer("gbdt_leaves").tables.n_trees > 1  # the trees run inside the graph


def test_training_records_data_versions_checkpoints_and_curves(evaluated):
    warehouse, version, _, _ = evaluated
    for model in MODELS:
        directory = artifacts.model_dir(warehouse, model, version)
        summary = json.loads((directory / "summary.json").read_text())
        history = json.loads((directory / "history.json").read_text())
        assert summary["samples_version"] == version and summary["input_versions"]["samples"] == version
        assert {"events", "user_snapshot", "item_snapshot"} <= set(summary["input_versions"])
        assert len(history["val_auc"]) == summary["epochs"] >= summary["best_epoch"] >= 1
        assert summary["best_val_auc"] == max(history["val_auc"])
        assert summary["train_examples_per_second"] > 0
        assert (directory / "checkpoints" / "best.keras").exists()
        assert list((directory / "tensorboard").rglob("events.out.tfevents.*"))
    assert not list(artifacts.model_dir(warehouse, "lr", version).parent.glob(".*staging*"))


def test_train_and_evaluate_refuse_bad_input_in_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    document = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    config.write_text(
        yaml.safe_dump({**document, "paths": {"raw": str(tmp_path / "raw"), "warehouse": str(tmp_path / "wh")}})
    )
    assert main(["train", "--config", str(config), "--model", "xgboost"]) == 2
    assert main(["evaluate", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("recpipe train: error: unknown model 'xgboost'")
    assert err[1].startswith("recpipe evaluate: error: no samples built yet") and len(err) == 2
