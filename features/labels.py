"""Labeled events: impressions attributed to clicks, or ratings above a threshold, plus sampled negatives.

Library code: DataFrames in, DataFrames out. Output columns of every labeler:
    sample_id, event_id, user_id, item_id, event_time, event_date, device, page, position,
    label (0/1), weight, is_sampled_negative
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from features.validation import Section

LABELED_COLUMNS = [
    "sample_id",
    "event_id",
    "user_id",
    "item_id",
    "event_time",
    "event_date",
    "device",
    "page",
    "position",
    "label",
    "weight",
    "is_sampled_negative",
]


class LabelConfig(Section):
    """How events become labeled samples: the `samples:` section of a pipeline config, whose label
    fields and their defaults are these (jobs/settings.py adds the split settings)."""

    kind: Literal["click", "rating"] = "click"  # click: impression + click within the window | rating >= threshold
    attribution_window_minutes: int = Field(30, ge=0)
    rating_threshold: float = 4.0
    negatives_per_positive: int = Field(0, ge=0)  # sampled items the user never interacted with, per positive
    negative_sampling: Literal["popularity", "uniform"] = "popularity"  # popularity: interactions^0.75
    seed: int = 7
    weight: Literal["none", "dwell"] = "none"  # dwell: positives weighted by max(1, log1p(dwell seconds))

    def label_fields(self) -> dict:
        """The label settings alone (what a samples manifest records)."""
        return {name: getattr(self, name) for name in LabelConfig.model_fields}


def click_labels(events: DataFrame, first: dt.date, last: dt.date, config: LabelConfig) -> DataFrame:
    """Impressions of days first..last; positive when the same user clicks the same item within the
    attribution window after it (clicks after midnight count: `events` must hold the next day too)."""
    impressions = events.where(
        (F.col("event_type") == "impression") & F.col("event_date").between(F.lit(first), F.lit(last))
    )
    clicks = events.where(F.col("event_type") == "click").select(
        "user_id", "item_id", F.col("event_time").alias("click_time"), F.col("value").alias("dwell")
    )
    window = F.expr(f"make_dt_interval(0, 0, {int(config.attribution_window_minutes)})")
    attributed = impressions.join(clicks, ["user_id", "item_id"], "left").where(
        F.col("click_time").isNull()
        | ((F.col("click_time") >= F.col("event_time")) & (F.col("click_time") <= F.col("event_time") + window))
    )
    # the left join's non-matching clicks were filtered above; keep every impression exactly once
    per_impression = attributed.groupBy("event_id").agg(
        F.max(F.col("click_time").isNotNull().cast("int")).alias("label"), F.max("dwell").alias("dwell")
    )
    labeled = impressions.join(per_impression, "event_id", "left").fillna({"label": 0})
    weight = (
        F.when((F.col("label") == 1) & F.col("dwell").isNotNull(), F.greatest(F.lit(1.0), F.log1p("dwell"))).otherwise(
            F.lit(1.0)
        )
        if config.weight == "dwell"
        else F.lit(1.0)
    )
    return labeled.select(
        F.col("event_id").alias("sample_id"),
        "event_id",
        "user_id",
        "item_id",
        "event_time",
        "event_date",
        "device",
        "page",
        "position",
        F.col("label").cast("int").alias("label"),
        weight.cast("double").alias("weight"),
        F.lit(False).alias("is_sampled_negative"),
    )


def rating_labels(events: DataFrame, first: dt.date, last: dt.date, config: LabelConfig) -> DataFrame:
    ratings = events.where(
        (F.col("event_type") == "rating")
        & F.col("value").isNotNull()
        & F.col("event_date").between(F.lit(first), F.lit(last))
    )
    return ratings.select(
        F.col("event_id").alias("sample_id"),
        "event_id",
        "user_id",
        "item_id",
        "event_time",
        "event_date",
        "device",
        "page",
        "position",
        (F.col("value") >= config.rating_threshold).cast("int").alias("label"),
        F.lit(1.0).alias("weight"),
        F.lit(False).alias("is_sampled_negative"),
    )


def item_weights_by_day(daily_interactions: DataFrame, days: list[dt.date], config: LabelConfig) -> pd.DataFrame:
    """Sampling weights as of the day before each sample day: for every day E of `days`, each item's
    interactions on days <= E-1 (count^0.75 for popularity, 1 for uniform, items without any
    interaction by then are not drawn). daily_interactions: item_id, event_date, interactions.
    Collected to the driver: at most one row per (sample day, item)."""
    sample_days = daily_interactions.sparkSession.createDataFrame([(d,) for d in days], "sample_date date")
    known = (
        daily_interactions.join(F.broadcast(sample_days), F.col("event_date") < F.col("sample_date"))
        .groupBy("sample_date", "item_id")
        .agg(F.sum("interactions").alias("interactions"))
    )
    # pyspark's stubs type toPandas() with pandas' DataFrame, which mypy cannot see (pandas ships no stubs)
    rows = known.toPandas().sort_values(["sample_date", "item_id"], ignore_index=True)  # type: ignore[attr-defined]
    rows["weight"] = rows["interactions"].astype(float) ** 0.75 if config.negative_sampling == "popularity" else 1.0
    return rows[rows["weight"] > 0][["sample_date", "item_id", "weight"]].reset_index(drop=True)


def sample_negatives(
    spark: SparkSession,
    positives: DataFrame,
    first_interactions: DataFrame,
    item_weights: pd.DataFrame,
    config: LabelConfig,
    oversample: tuple[int, ...] = (4, 64),
) -> DataFrame:
    """For each positive of day E, `negatives_per_positive` items drawn with the item weights as of
    E-1 (item_weights_by_day) among the items the user had not interacted with by the end of E
    (`first_interactions`: user_id, item_id, first_date of the pair). Point in time: nothing after E
    changes a negative of day E. Deterministic: draws are seeded by (seed, event_id, round). Runs on
    the executors (mapInPandas over broadcast per-day CDFs). Heavy users whose first round of
    k * oversample[0] draws hits too many of their own items get a second, larger round."""
    k = config.negatives_per_positive
    if k <= 0:
        return positives.limit(0)
    tables_by_day = {}
    for day, group in item_weights.groupby("sample_date"):
        cdf = np.cumsum(group["weight"].to_numpy(dtype=float))
        tables_by_day[pd.Timestamp(day).date()] = (group["item_id"].to_numpy(dtype=np.int64), cdf / cdf[-1])
    broadcast = spark.sparkContext.broadcast(tables_by_day)
    seed = config.seed
    known = first_interactions.select("user_id", "item_id", "first_date")

    def drawer(round_index: int, draws: int):
        def draw(batches):
            import zlib

            by_day = broadcast.value
            for batch in batches:
                parts = []
                for event_id, day in zip(batch["event_id"], batch["event_date"]):
                    found = by_day.get(pd.Timestamp(day).date())
                    if found is None:  # no item had an interaction before that day: nothing to draw
                        continue
                    items, cumulative = found
                    rng = np.random.default_rng([seed, zlib.crc32(event_id.encode()), round_index])
                    picks = np.searchsorted(cumulative, rng.random(draws), side="right").clip(0, len(items) - 1)
                    parts.append(
                        pd.DataFrame(
                            {
                                "event_id": event_id,
                                "draw": np.arange(draws) + round_index * 1_000_000,
                                "item_id": items[picks],
                            }
                        )
                    )
                yield pd.concat(parts) if parts else pd.DataFrame({"event_id": [], "draw": [], "item_id": []})

        return draw

    chosen: DataFrame | None = None
    pending = positives.select("event_id", "user_id", "event_date")
    for round_index, factor in enumerate(oversample):
        candidates = pending.select("event_id", "event_date").mapInPandas(
            drawer(round_index, k * factor), "event_id string, draw int, item_id bigint"
        )
        interacted_by_then = (
            (F.col("c.user_id") == F.col("k.user_id"))
            & (F.col("c.item_id") == F.col("k.item_id"))
            & (F.col("k.first_date") <= F.col("c.event_date"))
        )
        kept = (
            candidates.join(pending, "event_id")
            .alias("c")
            .join(known.alias("k"), interacted_by_then, "left_anti")
            .select("event_id", "item_id", "draw")
        )
        chosen = kept if chosen is None else chosen.select("event_id", "item_id", "draw").unionByName(kept)
        chosen = (
            chosen.dropDuplicates(["event_id", "item_id"])
            .withColumn("_n", F.row_number().over(Window.partitionBy("event_id").orderBy("draw")) - 1)
            .where(F.col("_n") < k)
            .localCheckpoint()
        )
        full = chosen.groupBy("event_id").count().where(F.col("count") >= k).select("event_id")
        pending = pending.join(full, "event_id", "left_anti")
    assert chosen is not None, "oversample needs at least one round"
    return (
        positives.drop("item_id", "sample_id", "label", "weight", "is_sampled_negative")
        .join(chosen.select("event_id", "item_id", "_n"), "event_id")
        .withColumn("sample_id", F.concat("event_id", F.lit("-neg"), F.col("_n").cast("string")))
        .withColumn("label", F.lit(0))
        .withColumn("weight", F.lit(1.0))
        .withColumn("is_sampled_negative", F.lit(True))
        .select(*LABELED_COLUMNS)
    )
