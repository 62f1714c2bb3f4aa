"""`recpipe tune` on MovieLens 100K samples: seeded, valid split only (the test split is deleted from the
copy it tunes on), the chosen parameters written next to the samples version, `recpipe train --tuned`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jobs import artifacts
from jobs.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tuning_warehouse(ml100k_warehouse, tmp_path):
    """A private warehouse holding only the latest samples artefact of the session's ml-100k run, without
    its test split: tuning that opened the test split would fail. Returns (config path, version, warehouse)."""
    version = artifacts.latest_samples_version(ml100k_warehouse.root)
    warehouse = tmp_path / "warehouse"
    target = artifacts.samples_dir(warehouse, version)
    shutil.copytree(artifacts.samples_dir(ml100k_warehouse.root, version), target)
    shutil.rmtree(target / "parquet" / "split=test")
    config = yaml.safe_load((REPO / "conf" / "movielens.yaml").read_text())
    config["paths"] = {"raw": str(tmp_path / "raw"), "warehouse": str(warehouse)}
    config["training"].update({"max_epochs": 1, "verbose": 0})
    path = tmp_path / "movielens.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, version, warehouse


def _tune(config: Path, *extra: str) -> int:
    return main(["tune", "--config", str(config), "--budget-minutes", "10", *extra])


def test_xgboost_search_is_seeded_reads_train_and_valid_only_and_scores_as_the_gbdt_stage(
    tuning_warehouse, ml100k_warehouse, spark, capsys
):
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from features.feature_spec import load_spec
    from features.gbdt import dense_features, dense_frame
    from training.tuning import dense_matrix

    config, version, warehouse = tuning_warehouse
    assert _tune(config, "--model", "xgboost", "--trials", "3", "--seed", "11") == 0
    out = capsys.readouterr().out
    path = artifacts.artifacts_root(warehouse) / "tuning" / f"v{version}" / "xgboost.json"
    first = json.loads(path.read_text())
    assert f"wrote {path}" in out and "default" in out
    assert (first["samples_version"], first["seed"], first["trials_requested"]) == (version, 11, 3)
    assert first["budget_minutes"] == 10 and first["stopped_by"] == "trials" and len(first["trials"]) == 3
    assert all("split=test" not in f for f in first["files_read"])
    assert {Path(f).parent.name for f in first["files_read"]} == {"split=train", "split=valid"}
    # trial 0 is the configured booster; the chosen trial is the best valid AUC
    defaults = yaml.safe_load(config.read_text())["gbdt"]
    assert first["trials"][0]["params"] == {
        "max_depth": defaults["max_depth"],
        "learning_rate": defaults["learning_rate"],
        "min_child_weight": 1.0,
        "subsample": 1.0,
        "colsample_bytree": 1.0,
        "reg_lambda": 1.0,
    }
    assert first["default"]["valid_auc"] == first["trials"][0]["valid_auc"]
    best = max(first["trials"], key=lambda t: t["valid_auc"])
    assert first["chosen"]["trial"] == best["number"] and first["chosen"]["valid_auc"] == best["valid_auc"]
    assert first["chosen"]["params"]["n_estimators"] == best["rounds"]

    # the same seed proposes the same trials and chooses the same parameters
    assert _tune(config, "--model", "xgboost", "--trials", "3", "--seed", "11") == 0
    second = json.loads(path.read_text())
    assert [t["params"] for t in second["trials"]] == [t["params"] for t in first["trials"]]
    assert second["chosen"] == first["chosen"]
    assert second["run_id"] != first["run_id"]

    # independently: the gbdt stage's Spark coding of the valid rows, sklearn's AUC of a fresh booster
    samples = artifacts.samples_dir(ml100k_warehouse.root, version)
    features = dense_features(load_spec(), json.loads((samples / "transforms.json").read_text())["features"])
    names = [f.name for f in features]

    def rows(split):  # in the order of the shards' rows (sorted files), as the search reads them
        files = sorted((samples / "parquet" / f"split={split}").glob("*.parquet"))
        order = pa.concat_tables(pq.read_table(f, columns=["sample_id"]) for f in files).column(0).to_pylist()
        frame = spark.read.parquet(*[str(f) for f in files])
        local = dense_frame(frame, features, ["sample_id", "label", "weight"]).toPandas().set_index("sample_id")
        local = local.loc[order]
        return local[names].to_numpy(np.float32), local["label"].to_numpy(), local["weight"].fillna(1.0).to_numpy()

    (train_x, train_y, train_w), (valid_x, valid_y, _) = rows("train"), rows("valid")
    searched = dense_matrix(sorted((samples / "parquet" / "split=valid").glob("*.parquet")), features)
    np.testing.assert_array_equal(searched[0], valid_x)  # NaN where the Spark coding has NaN
    chosen = first["trials"][first["chosen"]["trial"]]
    params = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "nthread": 1,
        "seed": 11,
        **chosen["params"],
    }
    booster = xgb.train(
        params,
        xgb.DMatrix(train_x, label=train_y, weight=train_w, missing=np.nan, feature_names=names),
        num_boost_round=chosen["rounds"],
    )
    predicted = booster.predict(xgb.DMatrix(valid_x, missing=np.nan, feature_names=names))
    assert roc_auc_score(valid_y, predicted) == pytest.approx(chosen["valid_auc"], abs=1e-9)
    gbdt_stage = json.loads((artifacts.gbdt_dir(ml100k_warehouse.root, version) / "metrics.json").read_text())
    assert first["default"]["valid_auc"] == pytest.approx(gbdt_stage["metrics"]["valid"]["auc"], abs=0.005)


def test_keras_search_writes_the_choice_and_train_tuned_uses_it(tuning_warehouse, capsys):
    config, version, warehouse = tuning_warehouse
    assert _tune(config, "--model", "lr", "--trials", "2") == 0
    out = capsys.readouterr().out
    document = json.loads((artifacts.artifacts_root(warehouse) / "tuning" / f"v{version}" / "lr.json").read_text())
    assert document["stopped_by"] == "trials" and len(document["trials"]) == 2 and document["seed"] == 7
    configured = yaml.safe_load(config.read_text())["models"]["lr"]
    assert document["default"]["params"] == {
        "learning_rate": configured["learning_rate"],
        "l2": 0.0,
        "numeric_buckets": configured.get("numeric_buckets", False),
        "crosses": configured["crosses"],
    }
    assert document["trials"][1]["params"] != document["trials"][0]["params"]
    assert all(t["epochs"] == 1 and 0.3 < t["valid_auc"] < 1 for t in document["trials"])
    assert all("split=test" not in f for f in document["files_read"])
    for trial in document["trials"]:
        assert f"{trial['valid_auc']:.4f}" in out

    chosen = document["chosen"]["params"]
    chosen_path = str(artifacts.artifacts_root(warehouse) / "tuning" / f"v{version}" / "lr.json")
    # the test split is gone from this copy: train must not need it either
    assert main(["train", "--config", str(config), "--model", "lr", "--tuned"]) == 0
    summary = json.loads((artifacts.model_dir(warehouse, "lr", version) / "summary.json").read_text())
    assert summary["tuned_from"] == chosen_path
    assert summary["params"]["learning_rate"] == chosen["learning_rate"] and summary["params"]["l2"] == chosen["l2"]


def test_a_trial_fits_the_core_on_a_kept_split_and_train_tuned_reproduces_its_valid_auc(tuning_warehouse, monkeypatch):
    """A Keras trial trains as recpipe train does: the model core (no lookup, hashing or bucketing layer in
    it) on the train split encoded once and kept, instead of the raw-feature model on shards read and
    encoded every epoch; so `recpipe train --tuned` gets the chosen trial's valid AUC back."""
    import keras

    import training.dataset
    from jobs import tune

    config, version, warehouse = tuning_warehouse
    document = yaml.safe_load(config.read_text())
    document["training"]["max_epochs"] = 2  # a single epoch streams: there is nothing to replay
    config.write_text(yaml.safe_dump(document))
    kept, fitted = [], []
    keep, fit = training.dataset._kept_encoded, tune.tuning.keras_fit_valid_auc
    monkeypatch.setattr(training.dataset, "_kept_encoded", lambda *args: kept.append(args[0]) or keep(*args))
    monkeypatch.setattr(
        tune.tuning, "keras_fit_valid_auc", lambda model, *args, **kw: fitted.append(model) or fit(model, *args, **kw)
    )
    assert _tune(config, "--model", "wide_deep", "--trials", "2") == 0
    shards = artifacts.samples_dir(warehouse, version) / "parquet" / "split=train"
    assert len(kept) == 2 and all(files == sorted(shards.glob("*.parquet")) for files in kept)
    preprocessing = (keras.layers.Hashing, keras.layers.IntegerLookup, keras.layers.StringLookup)
    assert len(fitted) == 2
    for model in fitted:
        layers = [layer for layer in model._flatten_layers() if isinstance(layer, preprocessing)]
        assert not layers, layers
    tuned = json.loads((artifacts.artifacts_root(warehouse) / "tuning" / f"v{version}" / "wide_deep.json").read_text())
    chosen = tuned["trials"][tuned["chosen"]["trial"]]
    assert main(["train", "--config", str(config), "--model", "wide_deep", "--tuned"]) == 0
    summary = json.loads((artifacts.model_dir(warehouse, "wide_deep", version) / "summary.json").read_text())
    assert summary["best_val_auc"] == pytest.approx(chosen["valid_auc"], abs=1e-6)

    kept.clear()  # a split above training.keep_encoded_max_mb (79k rows x ~470 bytes: ~35 MiB) streams
    document["training"]["keep_encoded_max_mb"] = 1
    config.write_text(yaml.safe_dump(document))
    assert _tune(config, "--model", "wide_deep", "--trials", "1") == 0
    assert kept == [] and len(fitted) == 3
    document["training"].update({"keep_encoded_max_mb": 2048, "max_epochs": 1})  # one epoch: streamed
    config.write_text(yaml.safe_dump(document))
    assert _tune(config, "--model", "wide_deep", "--trials", "1") == 0
    assert kept == [] and len(fitted) == 4


def test_bad_arguments_and_missing_tuned_parameters_exit_2_in_one_line(tuning_warehouse, tmp_path, capsys):
    config, version, warehouse = tuning_warehouse
    assert _tune(config, "--model", "catboost") == 2
    assert main(["tune", "--config", str(config), "--budget-minutes", "0"]) == 2
    assert main(["tune", "--config", str(config), "--budget-minutes", "nan"]) == 2
    assert _tune(config, "--trials", "0") == 2
    assert main(["tune", "--config", str(config)]) == 2  # the budget is required
    assert _tune(config, "--model", "lr", "--samples-version", str(version + 5)) == 2
    assert _tune(config, "--model", "gbdt_lr") == 2  # no gbdt stage in this warehouse
    assert main(["train", "--config", str(config), "--model", "deepfm", "--tuned"]) == 2
    document = yaml.safe_load(config.read_text())
    for section, key, value in [("training", "use_tuned", "maybe"), ("gbdt", "use_tunned", True)]:
        broken = tmp_path / f"{key}.yaml"
        broken.write_text(yaml.safe_dump({**document, section: {**document[section], key: value}}))
        assert main(["train", "--config", str(broken), "--model", "lr"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 10, err
    assert "unknown model 'catboost'" in err[0]
    assert "--budget-minutes" in err[1] and "--budget-minutes" in err[2] and "--trials" in err[3]
    assert "--budget-minutes" in err[4]
    assert f"no samples version {version + 5}" in err[5]
    assert "run recpipe gbdt" in err[6]
    assert err[7].startswith("recpipe train: error: training.use_tuned/--tuned: no tuned parameters for deepfm")
    assert "use_tuned" in err[8] and "use_tunned" in err[9]
    assert not (artifacts.artifacts_root(warehouse) / "tuning").exists()


def test_gbdt_settings_take_the_tuned_booster_parameters(tuning_warehouse):
    from jobs.config import load_config
    from jobs.settings import GbdtSettings
    from jobs.tune import with_tuned_gbdt

    config, version, warehouse = tuning_warehouse
    settings = load_config(str(config), {})
    with pytest.raises(Exception, match="no tuned parameters for xgboost"):
        with_tuned_gbdt(settings, version)
    chosen = {"max_depth": 3, "min_child_weight": 4.5, "subsample": 0.8, "colsample_bytree": 0.6}
    chosen |= {"reg_lambda": 12.0, "learning_rate": 0.05, "n_estimators": 87}
    path = artifacts.artifacts_root(warehouse) / "tuning" / f"v{version}" / "xgboost.json"
    artifacts.write_json_atomically(path, {"samples_version": version, "chosen": {"params": chosen}})
    tuned, used = with_tuned_gbdt(settings, version)
    assert used == str(path)
    assert tuned.gbdt == GbdtSettings(**{**settings.gbdt.model_dump(), **chosen})
    assert tuned.gbdt.early_stopping_rounds == settings.gbdt.early_stopping_rounds


def test_wide_models_search_numeric_buckets_and_crosses_and_keep_a_configured_cross_list():
    from jobs.tune import _covering
    from training.tuning import as_params, keras_space, search_values

    space = keras_space("lr")
    assert [c.name for c in space] == ["learning_rate", "l2", "numeric_buckets", "crosses"]
    assert "crosses" not in {c.name for c in keras_space("deepfm")}
    assert {"numeric_buckets", "crosses", "leaf_l2", "init_from_gbdt"} <= {c.name for c in keras_space("gbdt_lr")}
    configured = {"learning_rate": 0.002, "l2": 0.0, "numeric_buckets": True, "crosses": ("a_x_b", "c_x_d")}
    values = search_values(space, configured)
    assert values["crosses"] == "a_x_b,c_x_d"  # a categorical choice Optuna can store
    assert as_params(values) == configured
    crosses = next(c for c in _covering(space, values) if c.name == "crosses")
    assert crosses.values == (False, True, "a_x_b,c_x_d")  # trial 0 (the defaults) is a point of the space
