"""Benchmark: our point-in-time join against Feast's (local file offline store), same rows, same features.

    make bench-feast      # runs the three steps below, Feast in its own venv (.venv-feast)

    .venv/bin/python       bench/pit_join_vs_feast.py prepare [--rows 1000000]   # Spark side
    .venv-feast/bin/python bench/pit_join_vs_feast.py feast                      # Feast, file offline store
    .venv-feast/bin/python bench/pit_join_vs_feast.py feast-spark                # Feast, Spark offline store
    .venv/bin/python       bench/pit_join_vs_feast.py compare                    # row-for-row check, ratios

`prepare` needs a warehouse with snapshots (default: the one bench/snapshot_bench.py --source synthetic
leaves in bench/out). It takes the first `--rows` click-labeled impressions, times
features.samples.point_in_time_join on them (written to Parquet), and exports the entity rows and the
snapshot tables as Parquet for Feast, with each snapshot row timestamped at the last microsecond of its
day: Feast's "latest row at or before the event, within ttl = 1 day" is then exactly our "snapshot of the
day before". The user×category features need the item's category first, so Feast runs two retrievals;
its file store leaves out entity rows whose key never occurs in a feature view, so those are joined back
as "not found". At 1,000,000 rows Feast's file store was killed by the OOM killer on the 24 GiB
machine (it merges every entity row with every feature row of its key before filtering by time), so
--rows defaults to 250,000. Each side is warmed up once, then timed --repeats times (median); both
sides' times include writing their result to Parquet.
`feast-spark` runs the same two retrievals on Feast's Spark offline store (`feast[spark]`, its own
pyspark in .venv-feast) on the same local[2] with the same driver memory and shuffle partitions as ours,
keeps the result in Spark and writes it with Spark, as ours does; `compare` checks and times whichever
Feast sides ran.
Features compared: every scalar model feature of the user, item and user×category snapshots.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
from timing import median_seconds  # bench/timing.py, beside this script

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "pit-join"
# the Spark settings of both Spark sides (ours and Feast's Spark offline store): the same local[2]
SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "6g",
    "spark.sql.session.timeZone": "UTC",
}


def _scalar_features() -> dict[str, list[tuple[str, str]]]:
    sys.path.insert(0, str(REPO))
    from features.feature_spec import load_spec

    spec = load_spec()
    features = {}
    for entity in ("user", "item", "user_category"):
        features[entity] = [
            (f.name, f.dtype) for f in spec.model_features() if f.entity == entity and not f.dtype.startswith("array")
        ]
    return features


def prepare(args) -> None:
    sys.path.insert(0, str(REPO))

    from pyspark.sql import functions as F

    from features.daily_aggregates import with_event_date
    from features.feature_spec import load_spec
    from features.labels import LabelConfig, click_labels
    from features import snapshot_as_of as as_of
    from features.samples import ctr_priors, point_in_time_join
    from features.tables import open_tables
    from jobs.spark_session import build_session

    spark = build_session(
        {
            "master": "local[2]",
            "app_name": "pit-bench",
            "conf": {k: v for k, v in SPARK_CONF.items() if k not in ("spark.master", "spark.sql.session.timeZone")},
        }
    )
    tables = open_tables(spark, args.warehouse, "delta-rs")
    spec = load_spec()
    features = _scalar_features()
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in ("feast.json", "feast_spark.json"):  # results of an earlier prepare are not compared
        (OUT / stale).unlink(missing_ok=True)
    days = sorted(as_of.built_days(tables, "user"))
    events = with_event_date(tables.read("events"))
    labeled = click_labels(events, days[1], days[-2], LabelConfig())
    labeled = labeled.orderBy("event_time", "sample_id").limit(args.rows).localCheckpoint()
    rows = labeled.count()
    labeled.select(
        "sample_id", "user_id", "item_id", F.col("event_time").alias("event_timestamp")
    ).toPandas().to_parquet(OUT / "entities.parquet", coerce_timestamps="us")  # Spark reads no nanoseconds
    # both sides get the snapshot days the rows need (the day before each event day), nothing more
    needed = sorted(r.day for r in labeled.select(F.date_sub("event_date", 1).alias("day")).distinct().collect())
    end_of_day = F.expr("cast(date_add(snapshot_date, 1) as timestamp) - interval 1 microsecond")
    # Feast gets every known user and item on each needed day (the dense rows: sparse ones would leave it
    # without the inactive entities' values), and the stored user x category rows
    for entity, keys in (("user", ["user_id"]), ("item", ["item_id"]), ("user_category", ["user_id", "category"])):
        table = (
            as_of.dense_snapshot(tables, spec, entity, needed)
            if entity != "user_category"
            else tables.read(spec.entities[entity]["table"], partitions=needed)
        )
        table.select(*keys, *[name for name, _ in features[entity]], end_of_day.alias("feature_ts")).write.mode(
            "overwrite"
        ).parquet(str(OUT / f"{entity}_snapshot"))

    def ours() -> None:  # resolve the rows' entities from the sparse tables, join, write Parquet
        day_before = F.date_sub("event_date", 1).alias("snapshot_date")
        resolved = [
            as_of.read_as_of(tables, spec, e, labeled.select(f"{e}_id", day_before), needed) for e in ("user", "item")
        ]
        joined = point_in_time_join(
            labeled,
            *resolved,
            tables.read("user_category_snapshot", partitions=needed),
            spec,
            priors=ctr_priors(tables.read("item_snapshot", partitions=needed), spec),
        )
        joined.write.mode("overwrite").parquet(str(OUT / "ours"))

    seconds = median_seconds(ours, args.repeats)
    (OUT / "ours.json").write_text(json.dumps({"rows": rows, "seconds": seconds}))
    print(
        f"ours: point-in-time join + Parquet write of {rows} rows (median of {args.repeats} after a warm-up) with {sum(len(v) for v in features.values())} "
        f"features compared (of {len(spec.model_features())} joined): {seconds:.1f}s"
    )


def _feast_store(offline_store: str):
    """A Feast repo with the three feature views over the prepared snapshot Parquet, on `offline_store`."""
    import datetime as dt

    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.types import Float64, Int64, String
    from feast.value_type import ValueType

    features = json.loads((OUT / "features.json").read_text())
    types = {"long": Int64, "int": Int64, "double": Float64, "string": String}
    repo = OUT / f"feast_repo_{offline_store}"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    if offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        offline = {"type": "spark", "spark_conf": SPARK_CONF}

        def source(path):
            return SparkSource(name=path.name, path=str(path), file_format="parquet", timestamp_field="feature_ts")
    else:
        offline = {"type": "file"}

        def source(path):
            return FileSource(name=path.name, path=str(path), timestamp_field="feature_ts")

    config = RepoConfig(
        project="recpipe_bench",
        registry=str(repo / "registry.db"),
        provider="local",
        offline_store=offline,
        online_store={"type": "sqlite", "path": str(repo / "online.db")},
        entity_key_serialization_version=3,
        repo_path=str(repo),
    )
    store = FeatureStore(config=config)
    entities = {
        "user_id": Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64),
        "item_id": Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64),
        "category": Entity(name="category", join_keys=["category"], value_type=ValueType.STRING),
    }
    keys = {"user": ["user_id"], "item": ["item_id"], "user_category": ["user_id", "category"]}
    views = {}
    for entity, names in features.items():
        views[entity] = FeatureView(
            name=f"{entity}_features",
            entities=[entities[k] for k in keys[entity]],
            ttl=dt.timedelta(days=1),
            schema=[Field(name=n, dtype=types[t]) for n, t in names],
            source=source(OUT / f"{entity}_snapshot"),
        )
    store.apply([*entities.values(), *views.values()])
    return store, features


def _record(side: str, rows: int, seconds: float, repeats: int, what: str) -> None:
    (OUT / f"{side}.json").write_text(json.dumps({"rows": rows, "seconds": seconds}))
    print(f"{side}: {what} for {rows} rows (median of {repeats} after a warm-up): {seconds:.1f}s")


def run_feast(args) -> None:
    store, features = _feast_store("file")
    entity_rows = pd.read_parquet(OUT / "entities.parquet")
    entity_rows["event_timestamp"] = pd.to_datetime(entity_rows["event_timestamp"], utc=True)

    def feast() -> pd.DataFrame:  # two retrievals, the merge, the Parquet write: the same work as ours
        first = store.get_historical_features(
            entity_df=entity_rows, features=[f"{e}_features:{n}" for e in ("user", "item") for n, _ in features[e]]
        ).to_df()
        first["category"] = first["item_category"].fillna("__missing__")  # Feast needs a key value
        second = store.get_historical_features(
            entity_df=first[["sample_id", "user_id", "category", "event_timestamp"]],
            features=[f"user_category_features:{n}" for n, _ in features["user_category"]],
        ).to_df()
        # Feast's file store leaves out entity rows whose key never occurs in the feature view: left-join
        # them back as "not found" (our join marks the same rows with user_category_in_snapshot = false)
        joined = first.merge(
            second.drop(columns=["user_id", "category", "event_timestamp"]), on="sample_id", how="left"
        )
        joined.to_parquet(OUT / "feast.parquet")
        return joined

    seconds = median_seconds(feast, args.repeats)
    rows = len(pd.read_parquet(OUT / "feast.parquet"))
    _record("feast", rows, seconds, args.repeats, "get_historical_features (file store) + Parquet write")


def run_feast_spark(args) -> None:
    store, features = _feast_store("spark")
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = SparkSession.builder.getOrCreate()  # the session Feast's Spark store created from SPARK_CONF
    # pandas wrote the event times without a zone (UTC wall times): read them as UTC timestamps
    entity_rows = spark.read.parquet(str(OUT / "entities.parquet"))
    entity_rows = entity_rows.withColumn(
        "event_timestamp", F.col("event_timestamp").cast("timestamp")
    ).localCheckpoint()
    entity_rows.count()
    out = str(OUT / "feast_spark")

    def feast_spark() -> None:  # two retrievals, the left join back, the Parquet write, all in Spark
        first = store.get_historical_features(
            entity_df=entity_rows, features=[f"{e}_features:{n}" for e in ("user", "item") for n, _ in features[e]]
        ).to_spark_df()
        # materialized: Feast's second retrieval redefines the temp view the first one's plan reads
        # (a "recursive view" error otherwise)
        first = first.withColumn("category", F.coalesce("item_category", F.lit("__missing__"))).localCheckpoint()
        second = store.get_historical_features(
            entity_df=first.select("sample_id", "user_id", "category", "event_timestamp"),
            features=[f"user_category_features:{n}" for n, _ in features["user_category"]],
        ).to_spark_df()
        joined = first.join(second.drop("user_id", "category", "event_timestamp"), "sample_id", "left")
        joined.write.mode("overwrite").parquet(out)

    seconds = median_seconds(feast_spark, args.repeats)
    rows = spark.read.parquet(out).count()
    _record(
        "feast_spark", rows, seconds, args.repeats, "get_historical_features (Spark store, local[2]) + Parquet write"
    )


def _check_identical(ours: pd.DataFrame, theirs: pd.DataFrame, features) -> int:
    assert len(ours) == len(theirs) == ours.index.nunique(), (len(ours), len(theirs))
    theirs = theirs.loc[ours.index]
    indicators = {"user": "user_in_snapshot", "item": "item_in_snapshot", "user_category": "user_category_in_snapshot"}
    checked = 0
    for entity, names in features.items():
        for name, _ in names:
            found = ours[indicators[entity]].to_numpy()
            # Feast has no defaults: where the entity was found the values must be equal, else Feast has null
            mine, feast_values = ours.loc[found, name], theirs.loc[found, name]
            same = (mine == feast_values) | (mine.isna() & feast_values.isna())
            assert same.all(), (
                f"{name}: {int((~same).sum())} rows differ, e.g. {mine[~same].head(3).to_dict()} "
                f"vs {feast_values[~same].head(3).to_dict()}"
            )
            assert theirs.loc[~found, name].isna().all(), f"{name}: Feast found rows our join did not"
            checked += 1
    return checked


def compare(args) -> None:
    features = _scalar_features()
    ours = pd.read_parquet(OUT / "ours").set_index("sample_id")
    ours_seconds = json.loads((OUT / "ours.json").read_text())["seconds"]
    sides = {
        "feast": ("Feast file store", OUT / "feast.parquet"),
        "feast_spark": ("Feast Spark store", OUT / "feast_spark"),
    }
    ran = [side for side in sides if (OUT / f"{side}.json").exists()]
    assert ran, f"no Feast side has run: run the feast or feast-spark step first ({OUT})"
    for side in ran:
        label, path = sides[side]
        theirs = pd.read_parquet(path).set_index("sample_id")
        checked = _check_identical(ours, theirs, features)
        seconds = json.loads((OUT / f"{side}.json").read_text())["seconds"]
        print(f"{label}: identical, {len(ours)} rows x {checked} features")
        print(
            f"ours {ours_seconds:.1f}s, {label} {seconds:.1f}s: ours is {seconds / ours_seconds:.1f}x faster "
            f"(target >= 3x)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "feast", "feast-spark", "compare"])
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side after one warm-up (median)")
    parser.add_argument("--warehouse", default=str(REPO / "bench" / "out" / "snapshot-synthetic" / "warehouse"))
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args)
        (OUT / "features.json").write_text(json.dumps(_scalar_features()))
    elif args.step == "feast":
        run_feast(args)
    elif args.step == "feast-spark":
        run_feast_spark(args)
    else:
        compare(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
