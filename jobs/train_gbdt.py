"""Train the GBDT on the latest samples and write leaf features for every sample.

    spark-submit jobs/train_gbdt.py --config conf/demo.yaml
    recpipe gbdt --config conf/demo.yaml [--samples-version N]

Writes the Delta table `gbdt_leaves` (sample_id, event_date, split, label, gbdt_leaves array<int>,
gbdt_probability; partitions of the samples replaced) and <warehouse>/_artifacts/gbdt/v<samples version>/:
    booster.json     the XGBoost model          trees.json     compact leaf vocabularies (in-graph encoder)
    features.json    ordered inputs and codes   importance.json  gain per feature
    metrics.json     XGBoost-alone AUC/logloss per split (the baseline the model comparison reads)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # started as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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

KEEP = ["sample_id", "event_date", "split", "label"]


def train_gbdt(
    spark: SparkSession, tables: Tables, config: Settings | dict, samples_version: int | None = None
) -> dict:
    spec = load_spec()
    version = artifacts.latest_samples_version(tables.root) if samples_version is None else samples_version
    source = artifacts.samples_dir(tables.root, version)
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
    samples = tables.read("samples", version=version, partitions=days)
    dense = gbdt.dense_frame(samples, features, [*KEEP, "weight"]).localCheckpoint()
    fit_rows = dense.where(F.col("split").isin("train", "valid")).withColumn("is_valid", F.col("split") == "valid")
    booster = gbdt.train_booster(fit_rows, features, params)
    trees = to_json(tree_tables_from_booster(booster))

    scored = gbdt.leaves_and_scores(spark, dense, features, booster, trees, KEEP).localCheckpoint()
    leaves_version = tables.replace_partitions("gbdt_leaves", scored, "event_date", days, run)
    metrics = {
        split: gbdt.binary_metrics(scored.where(F.col("split") == split)) for split in ("train", "valid", "test")
    }

    target = artifacts.gbdt_dir(tables.root, version)
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
