"""recpipe train --warm-start (training.warm_start): a model starts from its newest model on an older
samples version, with that model's preprocessing, and trains on the new samples (the daily challenger)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from jobs import artifacts
from jobs.cli import main
from training.saved_models import load_trained

REPO = Path(__file__).resolve().parents[1]


def _warehouse_with_new_samples(source_warehouse: str, tmp_path: Path) -> tuple[Path, int]:
    """A warehouse holding the lr model of ml-100k's samples version N and a 'next day' version N+1: the
    same rows, with every normalization mean moved by 1 (so its preprocessing differs from N's)."""
    version = max(int(p.name[1:]) for p in artifacts.model_dir(source_warehouse, "lr", 0).parent.glob("v*"))
    warehouse = tmp_path / "warehouse"
    samples = artifacts.samples_dir(source_warehouse, version)
    shutil.copytree(samples, artifacts.samples_dir(warehouse, version))
    shutil.copytree(samples, artifacts.samples_dir(warehouse, version + 1))
    shutil.copytree(artifacts.model_dir(source_warehouse, "lr", version), artifacts.model_dir(warehouse, "lr", version))
    path = artifacts.samples_dir(warehouse, version + 1) / "transforms.json"
    transforms = json.loads(path.read_text())
    for fitted in transforms["features"].values():
        if fitted.get("transform") in ("normalize", "log1p"):
            fitted["mean"] += 1.0
    transforms["samples_version"] = version + 1
    path.write_text(json.dumps(transforms))
    manifest = json.loads((artifacts.samples_dir(warehouse, version + 1) / "manifest.json").read_text())
    (artifacts.samples_dir(warehouse, version + 1) / "manifest.json").write_text(
        json.dumps({**manifest, "samples_version": version + 1})
    )
    return warehouse, version


def _predict(model, warehouse: Path, version: int) -> np.ndarray:
    from features.feature_spec import load_spec
    from training.dataset import make_dataset
    from training.inputs import model_inputs

    shards = artifacts.samples_dir(warehouse, version) / "parquet"
    features, _, _ = next(iter(make_dataset(shards, "test", model_inputs(load_spec()), 512)))
    return np.asarray(model(features, training=False)).reshape(-1)


def test_warm_start_keeps_the_older_models_weights_and_preprocessing(ml100k_warehouse, tmp_path):
    from features.feature_spec import load_spec
    from jobs.config import load_config
    from jobs.train_models import build_for_training, load_training_inputs, previous_model, warm_start

    warehouse, version = _warehouse_with_new_samples(ml100k_warehouse.root, tmp_path)
    assert previous_model(str(warehouse), "lr", version + 1) == version
    assert previous_model(str(warehouse), "lr", version) is None
    saved = load_trained(artifacts.model_dir(warehouse, "lr", version) / "model.keras")
    expected = _predict(saved, warehouse, version + 1)

    settings = load_config(REPO / "conf" / "movielens.yaml")
    spec, params = load_spec(), settings.models.params("lr")
    new, old = (load_training_inputs(str(warehouse), v, needs_gbdt=False) for v in (version + 1, version))
    warm, *_ = build_for_training("lr", spec, {**new, "transforms": old["transforms"]}, params, settings.training)
    warm_start("lr", warm, str(warehouse), version)
    np.testing.assert_allclose(_predict(warm, warehouse, version + 1), expected, rtol=1e-6, atol=1e-7)
    # the same weights behind the new samples' preprocessing would score differently: the older fit matters
    other, *_ = build_for_training("lr", spec, new, params, settings.training)
    other.set_weights(warm.get_weights())
    assert np.abs(_predict(other, warehouse, version + 1) - expected).max() > 1e-3


def test_train_warm_start_records_where_it_started_and_refuses_other_shapes(ml100k_warehouse, tmp_path, capsys):
    warehouse, version = _warehouse_with_new_samples(ml100k_warehouse.root, tmp_path)
    config = yaml.safe_load((REPO / "conf" / "movielens.yaml").read_text())
    config["paths"] = {"raw": str(tmp_path / "raw"), "warehouse": str(warehouse)}
    config["training"] = {**config["training"], "max_epochs": 1, "verbose": 0}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["train", "--config", str(path), "--model", "lr", "--warm-start"]
    assert main([*argv, "--samples-version", str(version + 1)]) == 0
    summary = json.loads((artifacts.model_dir(warehouse, "lr", version + 1) / "summary.json").read_text())
    assert summary["warm_started_from"] == version
    assert summary["input_versions"]["preprocessing_samples"] == version
    assert summary["epochs"] == 1
    # nothing older than version N: trained cold, and said so
    shutil.rmtree(artifacts.model_dir(warehouse, "lr", version + 1))
    assert main([*argv, "--samples-version", str(version)]) == 0
    cold = json.loads((artifacts.model_dir(warehouse, "lr", version) / "summary.json").read_text())
    assert cold["warm_started_from"] is None and cold["input_versions"]["preprocessing_samples"] == version
    # parameters that build another model than the saved one: one line, exit 2, nothing written
    config["models"]["lr"] = {**config["models"]["lr"], "crosses": True}
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main([*argv, "--samples-version", str(version + 1)]) == 2
    error = capsys.readouterr().err
    assert f"the model trained on samples v{version}" in error and "train without warm start" in error
    lines = [line for line in error.strip().splitlines() if " INFO " not in line]  # progress logs before it
    assert len(lines) == 1 and "train without warm start" in lines[0]
    assert not artifacts.model_dir(warehouse, "lr", version + 1).exists()
