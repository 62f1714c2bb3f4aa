"""GBDT leaves on MovieLens 100K: Spark-side leaves, xgboost's pred_leaf and the in-graph encoder agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from pyspark.sql import functions as F

from features import gbdt
from features.feature_spec import load_spec
from features.gbdt_trees import from_json, leaf_indices_from_pred_leaf
from jobs import artifacts


@pytest.fixture(scope="module")
def trained(ml100k_warehouse):
    """`recpipe run` on ml-100k trained the GBDT on the samples it built (rating >= 4 labels)."""
    tables = ml100k_warehouse
    # other modules may build newer samples in the shared warehouse: take the ones the GBDT trained on
    trained_on = [int(p.name[1:]) for p in artifacts.gbdt_dir(tables.root, 0).parent.glob("v*")]
    version = max(trained_on)
    target = artifacts.gbdt_dir(tables.root, version)
    transforms = json.loads((artifacts.samples_dir(tables.root, version) / "transforms.json").read_text())["features"]
    booster = xgb.Booster()
    booster.load_model(str(target / "booster.json"))
    trees = json.loads((target / "trees.json").read_text())
    return tables, version, target, booster, trees, gbdt.dense_features(load_spec(), transforms)


def _dense(tables, version, features, where):
    samples = tables.read("samples", version=version).where(where)
    return gbdt.dense_frame(samples, features, ["sample_id", "split"]).toPandas().set_index("sample_id")


def test_leaves_match_pred_leaf_and_the_in_graph_encoder(trained):
    from training.leaf_encoder import GBDTLeafEncoder

    tables, version, _, booster, trees, features = trained
    dense = _dense(tables, version, features, "split IN ('valid', 'test')")
    assert len(dense) > 15_000
    matrix = dense[[f.name for f in features]].to_numpy(dtype=np.float32)
    assert np.isnan(matrix).any()  # ml-100k has missing features (no rating yet, unknown user-category)
    expected = leaf_indices_from_pred_leaf(
        booster.predict(xgb.DMatrix(matrix, missing=np.nan), pred_leaf=True), from_json(trees)
    )
    in_graph = GBDTLeafEncoder(trees)(matrix).numpy()
    assert np.array_equal(in_graph, expected)
    spark_side = (
        tables.read("gbdt_leaves")
        .where("split IN ('valid', 'test')")
        .select("sample_id", "gbdt_leaves")
        .toPandas()
        .set_index("sample_id")
        .loc[dense.index, "gbdt_leaves"]
    )
    assert np.array_equal(np.stack(spark_side.to_numpy()), expected)


def test_unseen_categories_and_missing_values(trained):
    from training.leaf_encoder import GBDTLeafEncoder

    tables, version, _, booster, trees, features = trained
    samples = (
        tables.read("samples", version=version)
        .where("split = 'test'")
        .limit(500)
        .withColumn("item_category", F.lit("Not-a-genre"))
        .withColumn("context_device", F.lit(None).cast("string"))
        .withColumn("user_age", F.when(F.col("user_id") % 2 == 0, F.lit(None)).otherwise(F.col("user_age")))
    )
    dense = gbdt.dense_frame(samples, features, ["sample_id"]).toPandas()
    category = next(f for f in features if f.name == "item_category")
    assert (dense["item_category"] == len(category.vocabulary)).all()  # the unseen code
    matrix = dense[[f.name for f in features]].to_numpy(dtype=np.float32)
    expected = leaf_indices_from_pred_leaf(
        booster.predict(xgb.DMatrix(matrix, missing=np.nan), pred_leaf=True), from_json(trees)
    )
    assert np.array_equal(GBDTLeafEncoder(trees)(matrix).numpy(), expected)


def test_artifacts_and_baseline_metrics(trained):
    tables, version, target, booster, trees, features = trained
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["samples_version"] == version and metrics["trees"] == booster.num_boosted_rounds()
    assert 0.6 < metrics["metrics"]["test"]["auc"] < 1.0  # rating >= 4 is learnable from the snapshots
    assert metrics["metrics"]["test"]["rows"] == tables.read("samples", version=version).where("split = 'test'").count()
    inputs = json.loads((target / "features.json").read_text())["inputs"]
    assert [i["name"] for i in inputs] == [f.name for f in features]
    gains = json.loads((target / "importance.json").read_text())["gain"]
    assert {g["feature"] for g in gains} == {f.name for f in features} and gains[0]["gain"] > 0
    leaves = tables.read("gbdt_leaves")
    assert leaves.count() == tables.read("samples", version=version).count()
    widths = leaves.select(F.size("gbdt_leaves").alias("n")).distinct().collect()
    assert [w.n for w in widths] == [trees["n_trees"]]


def test_driver_coding_equals_the_spark_coding(spark):
    """dense_matrix (pyarrow, the driver path) gives the codes DenseFeature.column gives in Spark:
    vocabulary index, unseen = len(vocabulary), missing = NaN, numerics as float32."""
    import pyarrow as pa

    features = [gbdt.DenseFeature("device", ("mobile", "web")), gbdt.DenseFeature("age")]
    rows = [("web", 31), ("mobile", None), ("tv", 7), (None, 0), ("web", 2**40)]
    table = pa.table({"device": [r[0] for r in rows], "age": pa.array([r[1] for r in rows], pa.int64())})
    nan = float("nan")
    by_hand = np.array([[1, 31], [0, nan], [2, 7], [nan, 0], [1, 2**40]], dtype=np.float32)
    driver = gbdt.dense_matrix(table, features)
    frame = spark.createDataFrame(rows, "device string, age bigint")
    on_spark = gbdt.dense_frame(frame, features, []).toPandas().to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(driver, by_hand)  # NaNs compare equal here
    np.testing.assert_array_equal(on_spark, by_hand)


def test_the_spark_path_trains_the_same_booster_and_leaves_as_the_driver(spark, trained, tmp_path):
    """`recpipe run` trained on the driver (ml-100k is below gbdt.local_max_rows); local_max_rows: 0 forces
    SparkXGBClassifier and executor scoring on a copy: the same trees, leaves and probabilities."""
    import shutil

    from chispa import assert_df_equality

    from features.tables import open_tables
    from jobs.config import load_config
    from jobs.train_gbdt import train_gbdt

    tables, version, target, booster, _, _ = trained
    driver_run = json.loads((target / "metrics.json").read_text())
    assert driver_run["trained_on"] == "driver"
    copy = tmp_path / "warehouse"
    shutil.copytree(tables.root, copy, ignore=shutil.ignore_patterns("models", "evaluation", "gbdt"))
    before = open_tables(spark, str(copy), "delta-rs").version("gbdt_leaves")
    # `recpipe gbdt` on rows that fit the driver, delta-rs tables: no JVM is started, and the rerun
    # replaces the leaves with the same rows in one new version
    program = (
        "import sys; from jobs.cli import main; code = main(sys.argv[1:]); from pyspark import SparkContext; "
        "print('jvm started:', SparkContext._gateway is not None); sys.exit(code)"
    )
    conf = str(Path(__file__).resolve().parents[1] / "conf" / "movielens.yaml")
    command = ["gbdt", "--config", conf, "--warehouse", str(copy), "--samples-version", str(version)]
    done = subprocess.run(
        [sys.executable, "-c", program, *command], capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "jvm started: False" in done.stdout
    copied = open_tables(spark, str(copy), "delta-rs")
    assert copied.version("gbdt_leaves") == before + 1
    assert_df_equality(copied.read("gbdt_leaves"), tables.read("gbdt_leaves"), ignore_row_order=True)
    config = load_config(Path(__file__).resolve().parents[1] / "conf" / "movielens.yaml")
    config = config.model_copy(update={"gbdt": config.gbdt.model_copy(update={"local_max_rows": 0})})
    on_spark = train_gbdt(spark, open_tables(spark, str(copy), "delta-rs"), config, version)
    assert on_spark["trained_on"] == "spark" and on_spark["trees"] == booster.num_boosted_rounds()
    spark_booster = xgb.Booster()
    spark_booster.load_model(str(artifacts.gbdt_dir(copy, version) / "booster.json"))
    assert spark_booster.get_dump(with_stats=True) == booster.get_dump(with_stats=True)
    # the same rows and schema whether Spark or pyarrow wrote the files
    assert_df_equality(
        open_tables(spark, str(copy), "delta-rs").read("gbdt_leaves"),
        tables.read("gbdt_leaves"),
        ignore_row_order=True,
    )
    for split in ("train", "valid", "test"):
        ours, theirs = driver_run["metrics"][split], on_spark["metrics"][split]
        assert ours["rows"] == theirs["rows"] and ours["logloss"] == pytest.approx(theirs["logloss"], rel=1e-9)
        assert ours["auc"] == pytest.approx(theirs["auc"], abs=2e-3)  # pyspark.ml bins the curve, sklearn is exact


def test_gbdt_lr_started_from_the_trees_predicts_what_xgboost_predicts(trained):
    """init_from_gbdt with the whole wide part (crosses, numeric buckets): before any step the model's
    probability on every test row is the booster's own (the start early stopping can keep)."""
    from jobs.settings import as_settings
    from jobs.train_models import load_training_inputs
    from training.baselines import score_test, xgboost_probability
    from training.feature_layers import FeatureEncoders
    from training.models import build_model

    tables, version, target, *_ = trained
    inputs = load_training_inputs(tables.root, version, needs_gbdt=True)
    params = as_settings({}).models.gbdt_lr.model_copy(
        update={"init_from_gbdt": True, "wide": True, "crosses": True, "numeric_buckets": True}
    )
    model = build_model("gbdt_lr", FeatureEncoders(load_spec(), inputs["transforms"]), params, inputs["gbdt"])
    shards = inputs["source"] / "parquet"
    started = score_test(model, shards)["prediction"]
    booster = xgboost_probability(target, inputs["gbdt"]["features"], inputs["transforms"], shards)
    assert len(started) > 9_000 and booster.std() > 0.01
    np.testing.assert_allclose(started, booster, atol=2e-6)
