"""Build training samples: labels, point-in-time join with the snapshots of the day before, one-row-per-
event check, quantile time split, fitted transforms, Parquet shards for TensorFlow.

    spark-submit jobs/build_samples.py --config conf/demo.yaml --start 2026-01-02 --end 2026-01-13
    recpipe samples --config conf/demo.yaml --start 2026-01-02 --end 2026-01-13

Writes the Delta table `samples` (partitions event_date S..E replaced in one commit, with a `split`
column) and, beside it, <paths.artifacts or the warehouse>/_artifacts/samples/v<samples version>/:
    manifest.json     input Delta versions, range, label config, cut points, row counts per split
    transforms.json   transforms fitted on the train split (consumed by the TensorFlow models)
    parquet/split=train|valid|test/*.parquet   shards for tf.data
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

if __package__ in (None, ""):  # started as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from features import ingest_runs, snapshot_runs
from features import labels as labeling
from features.daily_aggregates import with_event_date
from features.errors import PipelineInputError, QualityCheckFailed
from features.feature_spec import load_spec
from features import snapshot_as_of as as_of
from features.samples import check_one_row_per_event, ctr_priors, point_in_time_join
from features.split import SPLITS, assign_split, quantile_cut_points
from features.tables import Tables, partition_dates
from features.transforms import fit_transforms
from jobs.artifacts import samples_dir, spark_uri, write_json_atomically
from jobs import quality_gate
from jobs.config import date_range
from jobs.run_info import new_run
from jobs.settings import Settings, as_settings


def _check_inputs(tables: Tables, days: list[dt.date], kind: str, allow_incomplete_labels: bool) -> None:
    snapshots = as_of.built_days(tables, "user") & as_of.built_days(tables, "item")
    missing = [d for d in days if d - dt.timedelta(days=1) not in snapshots]
    if missing:
        day = missing[0] - dt.timedelta(days=1)
        raise PipelineInputError(
            f"samples of {missing[0]} need the snapshot of {day}, which is missing at {tables.path('user_snapshot')}: "
            f"run recpipe snapshot --date {day} first"
        )
    after = days[-1] + dt.timedelta(days=1)
    if kind == "click" and not allow_incomplete_labels and after not in partition_dates(tables, "events"):
        raise PipelineInputError(
            f"click labels of {days[-1]} need the events drop of {after} (clicks after midnight), which is not "
            f"ingested; ingest it or pass --allow-incomplete-labels"
        )


def _check_quality(tables: Tables, config: Settings, days: list[dt.date], versions: dict[str, int]) -> None:
    """Samples only from days whose events and snapshots passed their quality checks, on the very
    versions this job reads: missing or stale results count as not passed."""
    event_days = sorted(
        partition_dates(tables, "events")
        & set(date_range(days[0] - dt.timedelta(days=1), days[-1] + dt.timedelta(days=1)))
    )
    snapshot_days = [d - dt.timedelta(days=1) for d in days]
    problems = quality_gate.unpassed(tables, config, "events", event_days, versions["events"])
    for name in ("user_snapshot", "item_snapshot"):
        problems += quality_gate.unpassed(tables, config, name, snapshot_days, versions[name])
    if problems:
        raise QualityCheckFailed(
            f"samples refused: {problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
            f"fix the input and rerun that day's ingest or snapshot, or pass --ignore-quality-failures"
        )


def build_samples(
    spark: SparkSession,
    tables: Tables,
    config: Settings | dict,
    days: list[dt.date],
    allow_incomplete_labels: bool = False,
    ignore_quality_failures: bool = False,
) -> dict:
    settings = as_settings(config)
    home = settings.paths.artifacts_home(tables.root)  # before any work: a ConfigError if it cannot be
    spec = load_spec()
    label_config = labeling.LabelConfig(**settings.samples.label_fields())
    quantiles = list(settings.samples.split_quantiles)
    relative_error = settings.samples.quantile_relative_error
    _check_inputs(tables, days, label_config.kind, allow_incomplete_labels)
    start, end = days[0], days[-1]
    versions = {
        name: tables.version(name)
        for name in (
            "events",
            "user_snapshot",
            "item_snapshot",
            "user_category_snapshot",
            as_of.inactive_table("user"),
            as_of.inactive_table("item"),
        )
    }
    ingested = partition_dates(tables, "events")
    drops = sorted(d for d in ingested if start - dt.timedelta(days=1) <= d <= end + dt.timedelta(days=3))
    ingest_runs.require_complete(tables, drops, "samples", versions["events"])
    lateness_days = settings.ingest.lateness_days
    snapshot_runs.require_fresh(
        tables, [d - dt.timedelta(days=1) for d in days], lateness_days, "samples", versions["events"]
    )
    if not ignore_quality_failures:
        _check_quality(tables, settings, days, versions)
    run = new_run("samples", partitions=[d.isoformat() for d in days], input_versions=versions)

    events = with_event_date(tables.read("events", version=versions["events"], partitions=drops)).where(
        F.col("event_date").between(F.lit(start), F.lit(end + dt.timedelta(days=1)))
    )
    if label_config.kind == "click":
        labeled = labeling.click_labels(events, start, end, label_config)
    else:
        labeled = labeling.rating_labels(events, start, end, label_config)
        if label_config.negatives_per_positive > 0:
            # point in time: a negative of day E avoids what the user had interacted with by the end of E
            # and is drawn by popularity as of E-1; events after the range's last day are never read
            known_drops = sorted(d for d in ingested if d <= end + dt.timedelta(days=lateness_days))
            history = with_event_date(tables.read("events", version=versions["events"], partitions=known_drops)).where(
                F.col("event_date") <= F.lit(end)
            )
            first_interactions = history.groupBy("user_id", "item_id").agg(F.min("event_date").alias("first_date"))
            daily_interactions = (
                history.where(F.col("event_type").isin(list(spec.interaction_events)))
                .where(F.col("event_date") < F.lit(end))
                .groupBy("item_id", "event_date")
                .agg(F.count(F.lit(1)).alias("interactions"))
            )
            negatives = labeling.sample_negatives(
                spark,
                labeled.where("label = 1"),
                first_interactions,
                labeling.item_weights_by_day(daily_interactions, days, label_config),
                label_config,
            )
            labeled = labeled.unionByName(negatives)

    snapshot_days = [d - dt.timedelta(days=1) for d in days]
    labeled = labeled.localCheckpoint()  # asked twice: for the entities to resolve, then for the join
    day_before = F.date_sub("event_date", 1).alias("snapshot_date")
    resolved = {
        entity: as_of.read_as_of(
            tables,
            spec,
            entity,
            labeled.select(f"{entity}_id", day_before),
            snapshot_days,
            version=versions[f"{entity}_snapshot"],
            inactive_version=versions[as_of.inactive_table(entity)],
        )
        for entity in ("user", "item")
    }
    stored_items = tables.read("item_snapshot", version=versions["item_snapshot"], partitions=snapshot_days)
    joined = point_in_time_join(
        labeled,
        resolved["user"],
        resolved["item"],
        tables.read("user_category_snapshot", version=versions["user_category_snapshot"], partitions=snapshot_days),
        spec,
        priors=ctr_priors(stored_items, spec),
    )
    joined = joined.persist()
    try:
        check_one_row_per_event(joined)
        results = quality_gate.check_table(tables, settings, "samples", joined, "event_date", days)
        quality_gate.record_and_enforce(tables, results, run)  # before the samples commit: a failure publishes nothing
        cut_points = quantile_cut_points(joined, quantiles, relative_error)
        version = tables.replace_partitions(
            "samples",
            assign_split(joined, cut_points),
            "event_date",
            days,
            {**run, "cut_points": [c.isoformat() for c in cut_points]},
        )
    finally:
        joined.unpersist()

    samples = tables.read("samples", version=version, partitions=days)
    counts = {
        row["split"]: {"rows": row["rows"], "positives": row["positives"]}
        for row in samples.groupBy("split")
        .agg(F.count(F.lit(1)).alias("rows"), F.sum("label").alias("positives"))
        .collect()
    }
    transforms = fit_transforms(samples.where(F.col("split") == "train"), spec, relative_error)
    target = samples_dir(home, version)
    samples.write.mode("overwrite").partitionBy("split").parquet(spark_uri(target / "parquet"))
    manifest = {
        **run,
        "samples_version": version,
        "range": [start.isoformat(), end.isoformat()],
        "labels": label_config.model_dump(),
        "split_quantiles": quantiles,
        "relative_error": relative_error,
        "cut_points": [c.isoformat() for c in cut_points],
        "splits": {s: counts.get(s, {"rows": 0, "positives": 0}) for s in SPLITS},
        "features": [f.name for f in spec.model_features()],
    }
    write_json_atomically(
        target / "transforms.json",
        {
            "samples_version": version,
            "fitted_on": "train",
            "train_rows": manifest["splits"]["train"]["rows"],
            "features": transforms,
        },
    )
    write_json_atomically(target / "manifest.json", manifest)
    return manifest


def format_summary(manifest: dict) -> str:
    lines = [
        f"samples v{manifest['samples_version']} {manifest['range'][0]}..{manifest['range'][1]}, "
        f"cut points {', '.join(manifest['cut_points'])}",
        f"{'split':<6} {'rows':>9} {'positives':>9} {'rate':>6}",
    ]
    for split, c in manifest["splits"].items():
        rate = c["positives"] / c["rows"] if c["rows"] else 0.0
        lines.append(f"{split:<6} {c['rows']:>9} {c['positives']:>9} {rate:>6.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["samples", "--spark-submit", *sys.argv[1:]]))
