"""Ties in ranked features follow the rules stated in schemas/features.yaml (hand examples)."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from features.feature_spec import load_spec
from features.snapshot import top_categories

D = dt.date(2026, 6, 1)


def test_top_categories_ties_go_to_more_engagements_then_the_name_ascending(spark):
    spec = load_spec()
    window = spec.feature("user_top_categories").window
    rows = [
        (1, "Drama", 3),
        (1, "Action", 3),
        (1, "Comedy", 5),
        (1, "War", 3),
        (1, "Zero", 0),
        (2, "b", 1),
        (2, "a", 1),
    ]
    sums = spark.createDataFrame(
        [(u, c, D, n) for u, c, n in rows],
        f"user_id long, category string, snapshot_date date, engagements_{window}d long",
    )
    got = {
        r.user_id: (r.top_categories, [round(s, 6) for s in r.top_category_shares])
        for r in top_categories(spec, sums).collect()
    }
    assert spec.top_categories == 3
    assert got == {
        1: (["Comedy", "Action", "Drama"], [round(5 / 14, 6), round(3 / 14, 6), round(3 / 14, 6)]),
        2: (["a", "b"], [0.5, 0.5]),
    }


def test_popularity_ranks_are_competition_ranks(spark):
    from features.snapshot import feature_column

    spec = load_spec()
    feature = spec.feature("item_popularity_rank_7d")
    frame = spark.createDataFrame(
        [(1, D, 9), (2, D, 5), (3, D, 5), (4, D, 1), (5, D, None), (6, D, 0)],
        "item_id long, snapshot_date date, engagements_7d long",
    )
    got = {r.item_id: r[feature.name] for r in frame.select("item_id", feature_column(feature, spec)).collect()}
    assert got == {1: 1, 2: 2, 3: 2, 4: 4, 5: 5, 6: 5}


def test_last_items_at_the_same_instant_follow_the_event_id_descending(spark):
    from features.daily_aggregates import user_daily

    at = dt.datetime(2026, 6, 1, 12)
    events = (
        spark.createDataFrame(
            [
                ("e1", "click", 1, 10, at, 1.0),
                ("e3", "click", 1, 30, at, 1.0),
                ("e2", "click", 1, 20, at, 1.0),
                ("e0", "click", 1, 40, at - dt.timedelta(seconds=1), 1.0),
            ],
            "event_id string, event_type string, user_id long, item_id long, event_time timestamp, value double",
        )
        .withColumn("event_date", F.to_date("event_time"))
        .withColumn("device", F.lit(None).cast("string"))
        .withColumn("page", F.lit(None).cast("string"))
        .withColumn("position", F.lit(None).cast("int"))
    )
    (row,) = user_daily(events, load_spec()).collect()
    assert row.last_items == [30, 20, 10, 40]
