"""`training.recalibrate: valid`: the global bias moves so the mean prediction on valid is valid's positive
rate; the ranking is unchanged and the saved (exported) model carries the shift."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from jobs import artifacts
from jobs.cli import main
from training.calibration import intercept_shift
from training.saved_models import load_trained

REPO = Path(__file__).resolve().parents[1]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_intercept_shift_by_hand_and_by_bisection():
    # one prediction for every row: the shift is the difference of the logits, logit(1/4) - logit(1/5)
    assert intercept_shift([0.2] * 4, [1, 0, 0, 0]) == pytest.approx(np.log(1 / 3) - np.log(1 / 4), abs=1e-12)
    rng = np.random.default_rng(0)
    p, y, w = rng.uniform(0.01, 0.6, 500), rng.random(500) < 0.1, rng.uniform(0.5, 2.0, 500)
    z = np.log(p / (1 - p))
    low, high = -20.0, 20.0  # the weighted mean prediction grows with the shift: bisect for the rate
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if np.dot(w, _sigmoid(z + middle)) < np.dot(w, y) else (low, middle)
    assert intercept_shift(p, y, w) == pytest.approx(low, abs=1e-9)
    assert intercept_shift([0.3, 0.4], [0, 0]) is None and intercept_shift([0.3, 0.4], [1, 1]) is None


@pytest.fixture
def samples_warehouse(ml100k_warehouse, tmp_path):
    """A private warehouse with the latest samples artefact of the session's ml-100k run (no models)."""
    version = artifacts.latest_samples_version(ml100k_warehouse.root)
    warehouse = tmp_path / "warehouse"
    shutil.copytree(artifacts.samples_dir(ml100k_warehouse.root, version), artifacts.samples_dir(warehouse, version))
    return warehouse, version


def _train_lr(tmp_path: Path, warehouse: Path, recalibrate: str) -> None:
    config = yaml.safe_load((REPO / "conf" / "movielens.yaml").read_text())
    config["paths"] = {"raw": str(tmp_path / "raw"), "warehouse": str(warehouse)}
    config["training"].update({"max_epochs": 1, "verbose": 0, "recalibrate": recalibrate})
    path = tmp_path / f"movielens-{recalibrate}.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--model", "lr"]) == 0


def _valid_scores(warehouse: Path, version: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import tensorflow as tf

    from features.feature_spec import load_spec
    from training.inputs import arrow_to_arrays, model_inputs

    model = load_trained(artifacts.model_dir(warehouse, "lr", version) / "model.keras")
    files = sorted((artifacts.samples_dir(warehouse, version) / "parquet" / "split=valid").glob("*.parquet"))
    inputs = model_inputs(load_spec())
    table = pq.ParquetDataset(files).read(columns=[i.name for i in inputs] + ["label", "weight"])
    features = {k: tf.constant(v) for k, v in arrow_to_arrays(table, inputs).items()}
    weights = np.nan_to_num(table.column("weight").to_numpy(zero_copy_only=False).astype(float), nan=1.0)
    return np.asarray(model(features)).ravel(), table.column("label").to_numpy().astype(float), weights


def test_train_recalibrates_on_valid_and_keeps_the_ranking(samples_warehouse, tmp_path):
    warehouse, version = samples_warehouse
    _train_lr(tmp_path, warehouse, "none")
    plain, labels, weights = _valid_scores(warehouse, version)
    _train_lr(tmp_path, warehouse, "valid")
    shifted, again, _ = _valid_scores(warehouse, version)
    np.testing.assert_array_equal(again, labels)
    rate = np.dot(weights, labels) / weights.sum()
    summary = json.loads((artifacts.model_dir(warehouse, "lr", version) / "summary.json").read_text())
    done = summary["recalibration"]
    assert done["split"] == "valid" and done["rows"] == len(labels)
    assert done["positive_rate"] == pytest.approx(rate, abs=1e-6)  # summed in float32 batches
    # the same seeded training as the plain run (up to thread scheduling in the last digits)
    assert done["mean_prediction_before"] == pytest.approx(np.dot(weights, plain) / weights.sum(), abs=1e-3)
    assert abs(done["logit_shift"]) > 1e-3  # a real shift: ml-100k's valid rate is not train's
    # the saved model's mean prediction on valid is valid's rate; every logit moved by the same amount
    assert np.dot(weights, shifted) / weights.sum() == pytest.approx(rate, abs=1e-5)
    logit = np.log(shifted / (1 - shifted)) - np.log(plain / (1 - plain))
    np.testing.assert_allclose(logit, done["logit_shift"], atol=1e-3)
