"""Training samples: labels, point-in-time join, one row per event, time split, fitted transforms."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from features import raw_drops
from features.daily_aggregates import with_event_date
from features.errors import PipelineInputError
from features import snapshot_as_of as as_of
from features.feature_spec import load_spec
from features.labels import LabelConfig, click_labels
from features.samples import check_one_row_per_event
from features.split import assign_split, quantile_cut_points, rolling_splits
from features.synthetic_logs import generate_logs
from features.tables import open_tables
from features.transforms import fit_transforms
from jobs import artifacts
from jobs.build_samples import build_samples
from jobs.build_snapshot import build_snapshots
from jobs.ingest import ingest

UTC = dt.timezone.utc
START = dt.date(2026, 4, 1)
DAYS = [START + dt.timedelta(days=i) for i in range(6)]


def _config(tmp_path, **samples):
    return {
        "paths": {"raw": str(tmp_path / "raw"), "warehouse": str(tmp_path / "warehouse")},
        "ingest": {"allowed_lateness_hours": 48},
        "samples": {"kind": "click", **samples},
    }


@pytest.fixture(scope="module")
def synthetic_samples(spark, tmp_path_factory):
    """Six synthetic days ingested and snapshotted; samples of days 2..5 (day 6 holds their late clicks)."""
    tmp_path = tmp_path_factory.mktemp("samples")
    config = _config(tmp_path)
    generate_logs(config["paths"]["raw"], start_date=START, days=len(DAYS), users=200, items=40, seed=5)
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, DAYS)
    build_snapshots(spark, tables, config, DAYS)
    manifest = build_samples(spark, tables, config, DAYS[1:-1])
    return tables, manifest


def _events(spark, rows):
    frame = pd.DataFrame(rows, columns=["event_id", "event_type", "user_id", "item_id", "event_time", "value"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return (
        spark.createDataFrame(
            frame, "event_id string, event_type string, user_id long, item_id long, event_time timestamp, value double"
        )
        .withColumn("device", F.lit("mobile"))
        .withColumn("page", F.lit("home"))
        .withColumn("position", F.lit(1))
        .withColumn("event_date", F.to_date("event_time"))
    )


def test_click_attribution_window_crosses_midnight(spark):
    events = _events(
        spark,
        [
            ("i1", "impression", 1, 10, "2026-04-01T23:50:00Z", None),
            ("c1", "click", 1, 10, "2026-04-02T00:10:00Z", 30.0),  # 20 min later, next day: positive
            ("i2", "impression", 1, 11, "2026-04-01T10:00:00Z", None),
            ("c2", "click", 1, 11, "2026-04-01T10:31:00Z", 5.0),  # 31 min later: too late
            ("i3", "impression", 2, 10, "2026-04-01T10:00:00Z", None),
            ("c3", "click", 2, 12, "2026-04-01T10:01:00Z", 5.0),  # another item
            ("i4", "impression", 3, 10, "2026-04-01T10:00:00Z", None),
            ("c4", "click", 3, 10, "2026-04-01T09:59:00Z", 5.0),  # before the impression
            ("i5", "impression", 4, 10, "2026-04-02T08:00:00Z", None),  # not a labeled day
        ],
    )
    labeled = click_labels(events, dt.date(2026, 4, 1), dt.date(2026, 4, 1), LabelConfig(weight="dwell"))
    got = {r.event_id: (r.label, round(r.weight, 3)) for r in labeled.collect()}
    assert got == {"i1": (1, 3.434), "i2": (0, 1.0), "i3": (0, 1.0), "i4": (0, 1.0)}


def test_one_row_per_event_check_names_the_duplicates(spark):
    frame = spark.createDataFrame([("a",), ("b",), ("b",), ("c",)], "sample_id string")
    check_one_row_per_event(frame.where("sample_id != 'b'"))
    with pytest.raises(PipelineInputError, match=r"duplicated sample_id: b \(2 rows\)"):
        check_one_row_per_event(frame)


def test_time_split_puts_no_test_event_before_the_cut(synthetic_samples):
    tables, manifest = synthetic_samples
    samples = tables.read("samples")
    train_cut, valid_cut = (dt.datetime.fromisoformat(c).replace(tzinfo=None) for c in manifest["cut_points"])
    bounds = {
        r.split: (r.first, r.last, r.n)
        for r in samples.groupBy("split")
        .agg(F.min("event_time").alias("first"), F.max("event_time").alias("last"), F.count("*").alias("n"))
        .collect()
    }
    assert bounds["train"][1] < train_cut <= bounds["valid"][0]
    assert bounds["valid"][1] < valid_cut <= bounds["test"][0]
    total = sum(b[2] for b in bounds.values())
    assert abs(bounds["train"][2] / total - 0.8) < 0.01 and abs(bounds["test"][2] / total - 0.1) < 0.01
    on_disk = json.loads(
        (artifacts.samples_dir(tables.root, manifest["samples_version"]) / "manifest.json").read_text()
    )
    assert on_disk["cut_points"] == manifest["cut_points"]
    assert on_disk["input_versions"]["events"] == tables.version("events")


def test_every_sample_joins_the_snapshot_of_the_day_before(synthetic_samples):
    tables, _ = synthetic_samples
    samples = tables.read("samples")
    assert samples.where(F.col("snapshot_date") != F.date_sub("event_date", 1)).count() == 0
    assert samples.count() == samples.select("sample_id").distinct().count()
    days = sorted({r.snapshot_date for r in samples.select("snapshot_date").distinct().collect()})
    snapshot = as_of.dense_snapshot(tables, load_spec(), "user", days).select(
        "user_id", "snapshot_date", F.col("user_clicks_7d").alias("expected"), F.col("user_ctr_7d").alias("ctr")
    )
    joined = samples.where("user_in_snapshot").join(snapshot, ["user_id", "snapshot_date"])
    assert joined.count() == samples.where("user_in_snapshot").count() > 0
    assert (
        joined.where((F.col("user_clicks_7d") != F.col("expected")) | (F.col("user_ctr_7d") != F.col("ctr"))).count()
        == 0
    )
    # no leakage, brute force from the events: a sample's 1-day and 7-day user and item counters are the
    # clicks and impressions of the day(s) before its event date, never of the labeled day itself
    events = tables.read("events").select("event_type", "user_id", "item_id", F.to_date("event_time").alias("day"))
    rows = samples.select(
        "sample_id",
        "user_id",
        "item_id",
        "event_date",
        "user_clicks_1d",
        "user_impressions_7d",
        "item_clicks_1d",
        "item_impressions_7d",
    )
    for entity, window, event_type, column in (
        ("user", 1, "click", "user_clicks_1d"),
        ("user", 7, "impression", "user_impressions_7d"),
        ("item", 1, "click", "item_clicks_1d"),
        ("item", 7, "impression", "item_impressions_7d"),
    ):
        key = f"{entity}_id"
        counted = (
            rows.alias("s")
            .join(
                events.where(F.col("event_type") == event_type).alias("e"),
                (F.col(f"s.{key}") == F.col(f"e.{key}"))
                & (F.col("e.day") < F.col("s.event_date"))
                & (F.col("e.day") >= F.date_sub("s.event_date", window)),
                "left",
            )
            .groupBy("s.sample_id", F.col(f"s.{column}").alias("got"))
            .agg(F.count("e.day").alias("expected"))
        )
        assert counted.count() == samples.count()
        wrong = counted.where(F.col("got") != F.col("expected")).limit(3).collect()
        assert not wrong, (column, wrong)


def test_missing_entities_get_defaults_and_an_indicator(synthetic_samples):
    tables, _ = synthetic_samples
    missing = tables.read("samples").where("NOT user_category_in_snapshot").first()
    assert missing.user_category_clicks_30d == 0 and missing.user_category_rating_mean_30d is None
    assert 0 < missing.user_category_ctr_30d < 1  # the prior


def test_transforms_are_fitted_on_train_only(spark, synthetic_samples):
    tables, manifest = synthetic_samples
    samples = tables.read("samples", version=manifest["samples_version"])
    saved = json.loads(
        (artifacts.samples_dir(tables.root, manifest["samples_version"]) / "transforms.json").read_text()
    )
    spec = load_spec()
    assert saved["features"] == json.loads(json.dumps(fit_transforms(samples.where("split = 'train'"), spec)))
    # extreme values placed only in test rows do not move any boundary, mean or vocabulary
    poisoned = samples.withColumn(
        "item_price", F.when(F.col("split") == "test", F.lit(1e9)).otherwise(F.col("item_price"))
    )
    poisoned = poisoned.withColumn(
        "user_age", F.when(F.col("split") == "test", F.lit(999)).otherwise(F.col("user_age"))
    )
    refit = fit_transforms(
        assign_split(poisoned, [dt.datetime.fromisoformat(c) for c in manifest["cut_points"]]).where("split = 'train'"),
        spec,
    )
    assert refit["item_price"] == saved["features"]["item_price"]
    assert refit["user_age"] == saved["features"]["user_age"]
    everything = fit_transforms(poisoned, spec)
    assert everything["item_price"]["mean"] > saved["features"]["item_price"]["mean"]


def test_fitted_transforms_match_numpy_on_the_train_rows(synthetic_samples):
    """Quantile boundaries within approxQuantile's rank error, vocabularies with min_count 5 ordered by count
    then value, log1p and normalize statistics: recomputed with numpy/pandas from the train rows."""
    import numpy as np

    tables, manifest = synthetic_samples
    saved = json.loads(
        (artifacts.samples_dir(tables.root, manifest["samples_version"]) / "transforms.json").read_text()
    )["features"]
    train = tables.read("samples", version=manifest["samples_version"]).where("split = 'train'").toPandas()
    n = len(train)
    checked = {"quantile_buckets": 0, "vocabulary": 0, "log1p": 0, "normalize": 0}
    for name, fitted in saved.items():
        kind = fitted["transform"]
        if kind in ("quantile_buckets", "normalize", "log1p"):  # 10 buckets (normalize / log1p: of the raw
            # value, the wide part's numeric_buckets): each boundary's rank range meets p*n within 0.001*n
            values = np.sort(train[name].dropna().astype(float).to_numpy())
            boundaries = fitted["boundaries"]
            assert boundaries == sorted(set(boundaries)) and set(boundaries) <= set(values.tolist())
            for p in [i / 10 for i in range(1, 10)]:
                target = p * len(values)
                assert any(
                    np.searchsorted(values, b, "left") - 0.001 * n - 1
                    <= target
                    <= np.searchsorted(values, b, "right") + 0.001 * n + 1
                    for b in boundaries
                ), (name, p)
        if kind == "vocabulary":
            column = train[name].explode() if fitted["dtype"].startswith("array<") else train[name]
            counts = column.dropna().astype(str).value_counts()
            kept = sorted(((-c, v) for v, c in counts.items() if c >= 5))[:10000]
            assert [str(v) for v in fitted["values"]] == [v for _, v in kept], name
        elif kind in ("log1p", "normalize"):
            values = train[name].dropna().astype(float).to_numpy()
            values = np.log1p(np.maximum(values, 0.0)) if kind == "log1p" else values
            assert fitted["count"] == len(values)
            assert fitted["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12), name
            assert fitted["std"] == pytest.approx(values.std(), rel=1e-9, abs=1e-12), name  # population sd
        elif kind != "quantile_buckets":
            continue
        checked[kind] += 1
    assert min(checked.values()) > 0, checked  # every kind was exercised


def test_parquet_shards_for_tensorflow(synthetic_samples):
    import pyarrow.dataset as ds

    tables, manifest = synthetic_samples
    shards = ds.dataset(
        artifacts.samples_dir(tables.root, manifest["samples_version"]) / "parquet", partitioning="hive"
    )
    counts = shards.to_table(columns=["split"]).column("split").value_counts().to_pylist()
    assert {c["values"]: c["counts"] for c in counts} == {
        s: manifest["splits"][s]["rows"] for s in ("train", "valid", "test")
    }


def test_quantile_cut_points_are_exact_enough(spark):
    times = [dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(minutes=i) for i in range(1000)]
    frame = spark.createDataFrame([(t,) for t in times], "event_time timestamp")
    cuts = quantile_cut_points(frame, [0.8, 0.9], 0.001)
    assert abs((cuts[0] - times[800]).total_seconds()) <= 120 and abs((cuts[1] - times[900]).total_seconds()) <= 120
    with pytest.raises(ValueError):
        quantile_cut_points(frame, [0.9, 0.8])


def test_rolling_splits():
    days = [START + dt.timedelta(days=i) for i in range(5)]
    splits = rolling_splits(days, train_days=3)
    assert splits == [(days[0:3], [days[3]]), (days[1:4], [days[4]])]


def test_samples_need_the_snapshot_of_the_day_before(spark, synthetic_samples, tmp_path):
    tables, _ = synthetic_samples
    with pytest.raises(PipelineInputError, match="need the snapshot of 2026-03-31"):
        build_samples(spark, tables, _config(tmp_path), [DAYS[0]])
    with pytest.raises(PipelineInputError, match="need the events drop of 2026-04-07"):
        build_samples(spark, tables, _config(tmp_path), [DAYS[-1]])


def test_negative_sampling_never_picks_an_item_interacted_with_by_then(spark, ml100k_warehouse_copy, tmp_path):
    tables = ml100k_warehouse_copy  # writes samples versions: not into the shared warehouse other tests read
    config = {
        "paths": {"warehouse": tables.root},
        "samples": {"kind": "rating", "negatives_per_positive": 3, "seed": 3, "split_quantiles": [0.8, 0.9]},
        "quality": {"enabled": False},
    }  # MovieLens day sizes swing; its run config relaxes those checks
    days = [dt.date(1997, 12, 1) + dt.timedelta(days=i) for i in range(10)]
    manifest = build_samples(spark, tables, config, days)
    samples = tables.read("samples", version=manifest["samples_version"], partitions=days)
    negatives = samples.where("is_sampled_negative")
    positives = samples.where("label = 1 AND NOT is_sampled_negative")
    assert negatives.where("label != 0").count() == 0
    assert negatives.count() == 3 * positives.count()
    first = (
        with_event_date(tables.read("events"))
        .groupBy("user_id", "item_id")
        .agg(F.min("event_date").alias("first_date"))
    )
    assert negatives.join(first, ["user_id", "item_id"]).where("first_date <= event_date").count() == 0
    assert negatives.join(first, ["user_id", "item_id"]).where("first_date > event_date").count() > 0  # later is fine
    again = build_samples(spark, tables, config, days)  # seeded: the same negatives
    redo = tables.read("samples", version=again["samples_version"], partitions=days).where("is_sampled_negative")
    assert sorted(map(tuple, redo.select("sample_id", "item_id").collect())) == sorted(
        map(tuple, negatives.select("sample_id", "item_id").collect())
    )


def test_samples_with_negatives_are_point_in_time(spark, tmp_path):
    """Changing only events after day D leaves every sample of days <= D identical, sampled negatives
    (items excluded as interacted, popularity weights) included; only the range-wide split may move."""
    days = [START + dt.timedelta(days=i) for i in range(8)]
    cut = days[4]
    raw = tmp_path / "raw"
    generate_logs(raw, start_date=START, days=len(days), users=300, items=40, seed=9)
    base = {
        "ingest": {"allowed_lateness_hours": 48},
        "quality": {"enabled": False},
        "samples": {"kind": "rating", "negatives_per_positive": 2, "seed": 3, "rating_threshold": 4},
    }

    def samples_of(name):
        config = {**base, "paths": {"raw": str(raw), "warehouse": str(tmp_path / name)}}
        tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
        ingest(spark, tables, config, days)
        build_snapshots(spark, tables, config, days)
        manifest = build_samples(spark, tables, config, days[1:])
        return tables.read("samples", version=manifest["samples_version"]).drop("split")

    before = samples_of("before")
    # rewrite the future: after the end of D, two thirds of the events deleted, the rest's items moved to
    # the most popular item and every user rating it (which changes popularity and interactions after D)
    end_of_cut = pd.Timestamp(cut + dt.timedelta(days=1), tz="UTC")
    for day in days[days.index(cut) + 1 :]:
        path = raw_drops.drop_files(raw, "events", day)[0]
        events = pd.read_json(path, lines=True, dtype={"event_time": str, "event_id": str}, convert_dates=False)
        events["position"] = events["position"].astype("Int64")
        future = pd.to_datetime(events["event_time"], utc=True, format="ISO8601") >= end_of_cut
        changed = events[~future | (events.index % 3 == 0)].copy()
        is_future = pd.to_datetime(changed["event_time"], utc=True, format="ISO8601") >= end_of_cut
        changed.loc[is_future, "item_id"] = 1
        ratings = (
            changed[is_future]
            .drop_duplicates("user_id")
            .assign(event_id=lambda f: f["event_id"] + "-r", event_type="rating", value=5.0, item_id=2)
        )
        raw_drops.write_drop(raw, "events", day, pd.concat([changed, ratings]))
    after = samples_of("after")

    until_cut, later = F.col("event_date") <= F.lit(cut), F.col("event_date") > F.lit(cut)
    assert before.where(until_cut & F.col("is_sampled_negative")).count() > 20
    assert_df_equality(after.where(until_cut), before.where(until_cut), ignore_row_order=True, ignore_nullable=True)
    assert after.where(later).exceptAll(before.where(later)).count() > 0  # the future did change


def test_negatives_avoid_what_the_user_had_interacted_with_by_then(spark):
    """Hand example: user 1 rated items 1 and 2 on day 1 and item 3 on day 3; a positive of day 2 may draw
    item 3 (interacted only later) but never items 1 or 2; weights are as of the day before."""
    from features.labels import item_weights_by_day, sample_negatives

    d1, d2, d3 = dt.date(2026, 5, 1), dt.date(2026, 5, 2), dt.date(2026, 5, 3)
    first = spark.createDataFrame([(1, 1, d1), (1, 2, d1), (1, 3, d3)], "user_id long, item_id long, first_date date")
    daily = spark.createDataFrame(
        [(1, d1, 5), (2, d1, 5), (3, d1, 5), (4, d2, 50)], "item_id long, event_date date, interactions long"
    )
    config = LabelConfig(kind="rating", negatives_per_positive=1, negative_sampling="uniform", seed=1)
    weights = item_weights_by_day(daily, [d2, d3], config)
    assert sorted(map(tuple, weights.astype({"item_id": int}).itertuples(index=False))) == [
        (pd.Timestamp(d2).date(), 1, 1.0),
        (pd.Timestamp(d2).date(), 2, 1.0),
        (pd.Timestamp(d2).date(), 3, 1.0),
        (pd.Timestamp(d3).date(), 1, 1.0),
        (pd.Timestamp(d3).date(), 2, 1.0),
        (pd.Timestamp(d3).date(), 3, 1.0),
        (pd.Timestamp(d3).date(), 4, 1.0),
    ]
    positives = spark.createDataFrame(
        [(f"p{i}", f"p{i}", 1, 1, dt.datetime(2026, 5, 2, 12), d2, None, None, None, 1, 1.0, False) for i in range(20)],
        "sample_id string, event_id string, user_id long, item_id long, event_time timestamp, event_date date, "
        "device string, page string, position int, label int, weight double, is_sampled_negative boolean",
    )
    drawn = {r.item_id for r in sample_negatives(spark, positives, first, weights, config).collect()}
    assert drawn == {3}  # items 1, 2 interacted by day 2; item 4 unknown before day 2
