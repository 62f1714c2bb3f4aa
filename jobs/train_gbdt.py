"""Train the GBDT on the latest samples and write leaf features for every sample.

    spark-submit jobs/train_gbdt.py --config conf/demo.yaml
    recpipe gbdt --config conf/demo.yaml [--samples-version N]

Writes the Delta table `gbdt_leaves` (sample_id, event_date, split, label, gbdt_leaves array<int>,
gbdt_probability; partitions of the samples replaced) and <paths.artifacts or the warehouse>/_artifacts/gbdt/v<samples version>/:
    booster.json     the XGBoost model          trees.json     compact leaf vocabularies (in-graph encoder)
    features.json    ordered inputs and codes   importance.json  gain per feature
    metrics.json     XGBoost-alone AUC/logloss per split (the baseline the model comparison reads)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # started as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from features import gbdt
from features.errors import PipelineInputError
from features.feature_spec import load_spec
from features.gbdt_trees import to_json, tree_tables_from_booster
from features.tables import Tables
from jobs import artifacts
from jobs.artifacts import write_json_atomically
from jobs.config import date_range
from jobs.run_info import new_run
from jobs.settings import Settings, as_settings
from training.inputs import read_shards, split_files

_log = logging.getLogger(__name__)

KEEP = ["sample_id", "event_date", "split", "label"]
SPLITS = ("train", "valid", "test")


def train_gbdt(
    spark: SparkSession | None, tables: Tables, config: Settings | dict, samples_version: int | None = None
) -> dict:
    """spark None: the tables start the session if they need one (the Spark path does; the driver path on
    delta-rs tables never does)."""
    spec = load_spec()
    home = as_settings(config).paths.artifacts_home(tables.root)
    version = artifacts.latest_samples_version(home) if samples_version is None else samples_version
    source = artifacts.samples_dir(home, version)
    if not (source / "manifest.json").exists():
        raise PipelineInputError(f"samples version {version} has no manifest at {source}")
    manifest = json.loads((source / "manifest.json").read_text())
    transforms = json.loads((source / "transforms.json").read_text())["features"]
    settings, tuned_from = as_settings(config), None
    if settings.gbdt.use_tuned:  # the XGBoost parameters recpipe tune chose for these samples
        from jobs.tune import with_tuned_gbdt

        settings, tuned_from = with_tuned_gbdt(settings, version)
    params = settings.gbdt
    days = date_range(*manifest["range"])
    run = new_run("gbdt", samples_version=version, input_versions={"samples": version})

    features = gbdt.dense_features(spec, transforms)
    rows = sum(split["rows"] for split in manifest["splits"].values())
    run["trained_on"] = "driver" if 0 < rows <= params.local_max_rows else "spark"
    started = time.perf_counter()
    if run["trained_on"] == "driver":  # fits the driver: no Spark job (and, on delta-rs tables, no JVM)
        threads = _driver_threads(spark, settings)
        booster, trees, scored, metrics = _on_the_driver(source, features, params, threads)
        trained = time.perf_counter()
        leaves_version = tables.replace_partitions_from_arrow("gbdt_leaves", scored, "event_date", days, run)
    else:
        spark = spark or tables.spark
        booster, trees, scored, metrics = _on_spark(spark, tables, version, days, features, params)
        trained = time.perf_counter()
        leaves_version = tables.replace_partitions("gbdt_leaves", scored, "event_date", days, run)
    _log.info(
        "%s rows trained and scored on the %s in %.1fs, gbdt_leaves written in %.1fs",
        rows,
        run["trained_on"],
        trained - started,
        time.perf_counter() - trained,
    )

    target = artifacts.gbdt_dir(home, version)
    target.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(target / "booster.json"))
    write_json_atomically(target / "trees.json", trees)
    write_json_atomically(
        target / "features.json",
        {
            "inputs": [
                {"name": f.name, "vocabulary": list(f.vocabulary) if f.vocabulary is not None else None}
                for f in features
            ],
            "missing": "NaN; string codes: index in vocabulary, unseen = len(vocabulary)",
        },
    )
    write_json_atomically(
        target / "importance.json", {"gain": gbdt.importance(booster, features).to_dict(orient="records")}
    )
    summary = {
        **run,
        "trees": trees["n_trees"],
        "leaves": int(sum(trees["leaves_per_tree"])),
        "gbdt_leaves_version": leaves_version,
        "params": params.model_dump(),
        "tuned_from": tuned_from,
        "metrics": metrics,
    }
    write_json_atomically(target / "metrics.json", summary)
    return summary


def _on_spark(spark: SparkSession, tables: Tables, version: int, days: list, features: list, params):
    """SparkXGBClassifier on train + valid, leaves and probabilities on the executors."""
    samples = tables.read("samples", version=version, partitions=days)
    dense = gbdt.dense_frame(samples, features, [*KEEP, "weight"]).localCheckpoint()
    fit_rows = dense.where(F.col("split").isin("train", "valid")).withColumn("is_valid", F.col("split") == "valid")
    booster = gbdt.train_booster(fit_rows, features, params)
    trees = to_json(tree_tables_from_booster(booster))
    scored = gbdt.leaves_and_scores(spark, dense, features, booster, trees, KEEP).localCheckpoint()
    metrics = {split: gbdt.binary_metrics(scored.where(F.col("split") == split)) for split in SPLITS}
    return booster, trees, scored, metrics


def _driver_threads(spark: SparkSession | None, settings: Settings) -> int:
    """The driver's cores (Spark's default: 1), from the running session (spark-submit --driver-cores) or
    else the config: on a machine shared with executors, more OpenMP threads than idle cores make xgboost
    several times slower, not faster."""
    cores = (
        spark.conf.get("spark.driver.cores", "1")
        if spark is not None
        else settings.spark.conf.get("spark.driver.cores", "1")
    )
    return max(1, int(cores))  # type: ignore[arg-type]  # pyspark's stub: conf.get with a default is never None


def _on_the_driver(source: Path, features: list, params, threads: int):
    """The samples' Parquet shards (the rows of the samples version, by split) coded with pyarrow, xgboost
    trained and scored in this process; returns the scored rows as one Arrow table for the Delta write."""
    columns = ["sample_id", "event_date", "label", "weight", *[f.name for f in features]]
    splits = {split: read_shards(split_files(source / "parquet", split), columns) for split in SPLITS}
    inputs = {split: gbdt.training_arrays(table, features) for split, table in splits.items()}
    started = time.perf_counter()
    booster = gbdt.fit_booster_locally(inputs["train"], inputs["valid"], params, threads)
    _log.info("xgboost on the driver (%d threads): %.1fs", threads, time.perf_counter() - started)
    trees = to_json(tree_tables_from_booster(booster))
    parts, metrics = [], {}
    for split, table in splits.items():
        if table.num_rows == 0:
            metrics[split] = gbdt.local_binary_metrics(inputs[split][1], np.empty(0))
            continue
        leaves, probability = gbdt.score_locally(booster, trees, inputs[split][0])
        metrics[split] = gbdt.local_binary_metrics(inputs[split][1], probability)
        parts.append(
            pa.table(
                {
                    "sample_id": table.column("sample_id"),
                    "event_date": table.column("event_date"),
                    "split": pa.array([split] * table.num_rows, pa.string()),
                    "label": table.column("label"),
                    "gbdt_leaves": pa.ListArray.from_arrays(
                        pa.array(np.arange(0, leaves.size + 1, leaves.shape[1], dtype=np.int32)),
                        pa.array(leaves.ravel()),
                    ),
                    "gbdt_probability": pa.array(probability, pa.float64()),
                }
            )
        )
    return booster, trees, pa.concat_tables(parts), metrics


def format_summary(summary: dict) -> str:
    lines = [
        f"gbdt on samples v{summary['samples_version']}: {summary['trees']} trees, {summary['leaves']} leaves",
        f"{'split':<6} {'rows':>9} {'auc':>7} {'logloss':>8}",
    ]
    for split, m in summary["metrics"].items():
        lines.append(f"{split:<6} {m['rows']:>9} {m['auc']:>7.4f} {m['logloss']:>8.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["gbdt", "--spark-submit", *sys.argv[1:]]))
