"""Benchmark: GBDT leaf extraction rows/s — Spark mapInPandas vs one process, and the in-graph
TensorFlow encoder vs xgboost's predict(pred_leaf=True) on the same rows.

    .venv/bin/python bench/gbdt_bench.py [--warehouse bench/out/snapshot-synthetic/warehouse] [--rows 1000000]

Needs a warehouse where `recpipe samples` and `recpipe gbdt` ran (e.g. `make demo` leaves ./warehouse).
Prints rows/s of each path (one warm-up, then the median of --repeats runs) and their ratios, like
for like: leaves + probability on both sides of Spark vs one process, leaves only on both sides of
the TensorFlow encoder vs xgboost (compare ratios, not seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features import gbdt  # noqa: E402
from timing import median_seconds  # noqa: E402  (bench/timing.py, beside this script)
from features.feature_spec import load_spec  # noqa: E402
from features.gbdt_trees import from_json, leaf_indices_from_pred_leaf  # noqa: E402
from features.tables import open_tables  # noqa: E402
from jobs import artifacts  # noqa: E402
from jobs.spark_session import build_session  # noqa: E402


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s ({seconds:.2f}s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", default="warehouse")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows scored (samples repeated if fewer)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path after a warm-up (median)")
    args = parser.parse_args()

    import xgboost as xgb

    spark = build_session(
        {
            "master": "local[2]",
            "app_name": "gbdt-bench",
            "conf": {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false", "spark.driver.memory": "6g"},
        }
    )
    tables = open_tables(spark, args.warehouse, "delta-rs")
    version = artifacts.latest_samples_version(tables.root)
    target = artifacts.gbdt_dir(tables.root, version)
    transforms = json.loads((artifacts.samples_dir(tables.root, version) / "transforms.json").read_text())["features"]
    features = gbdt.dense_features(load_spec(), transforms)
    trees = json.loads((target / "trees.json").read_text())
    booster = xgb.Booster()
    booster.load_model(str(target / "booster.json"))

    dense = gbdt.dense_frame(tables.read("samples", version=version), features, ["sample_id"])
    base = dense.count()
    copies = max(1, -(-args.rows // base))
    frame = dense.crossJoin(spark.range(copies).withColumnRenamed("id", "copy")).limit(args.rows).localCheckpoint()
    rows = frame.count()
    print(f"{rows} rows ({base} samples x {copies}), {trees['n_trees']} trees, {len(features)} features")

    repeats = args.repeats

    def spark_leaves_and_scores():
        gbdt.leaves_and_scores(spark, frame, features, booster, trees, ["sample_id"]).write.format("noop").mode(
            "overwrite"
        ).save()

    spark_seconds = median_seconds(spark_leaves_and_scores, repeats)

    matrix = frame.select(*[f.name for f in features]).toPandas().to_numpy(dtype=np.float32)
    tables_model = from_json(trees)

    def xgboost_leaves():
        return leaf_indices_from_pred_leaf(
            booster.predict(xgb.DMatrix(matrix, missing=np.nan), pred_leaf=True), tables_model
        )

    def xgboost_leaves_and_scores():  # the same work as each Spark task: leaves and probability
        data = xgb.DMatrix(matrix, missing=np.nan)
        leaf_indices_from_pred_leaf(booster.predict(data, pred_leaf=True), tables_model)
        booster.predict(data)

    leaves_seconds = median_seconds(xgboost_leaves, repeats)
    process_seconds = median_seconds(xgboost_leaves_and_scores, repeats)

    import tensorflow as tf

    from training.leaf_encoder import GBDTLeafEncoder

    encoder = GBDTLeafEncoder(trees)
    call = tf.function(lambda x: encoder(x), input_signature=[tf.TensorSpec([None, matrix.shape[1]], tf.float32)])

    def encoder_leaves():
        return np.concatenate([call(matrix[i : i + 65536]).numpy() for i in range(0, len(matrix), 65536)])

    assert np.array_equal(encoder_leaves(), xgboost_leaves()), "encoder and pred_leaf disagree"
    encoder_seconds = median_seconds(encoder_leaves, repeats)

    print(f"median of {repeats} runs after one warm-up each")
    print(f"leaves + probability, Spark mapInPandas on local[2]: {rate(rows, spark_seconds)}")
    print(f"leaves + probability, one process (pred_leaf + vocab map + predict): {rate(rows, process_seconds)}")
    print(f"leaves only, one process (pred_leaf + vocab map): {rate(rows, leaves_seconds)}")
    print(f"leaves only, in-graph TensorFlow encoder (batches of 65,536): {rate(rows, encoder_seconds)}")
    print(f"ratio Spark / one process (leaves + probability): {process_seconds / spark_seconds:.2f}x throughput")
    print(f"ratio TF encoder / xgboost (leaves only): {leaves_seconds / encoder_seconds:.2f}x throughput")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
