"""Per-entity per-day partial aggregates: computed once per day of logs, rolled up into windows.

Input: validated events with an `event_date` column (UTC date of event_time); for the user×category
aggregates also the item's `category` as of that date. Output: one row per entity key and event_date.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.feature_spec import FeatureSpec


def with_event_date(events: DataFrame) -> DataFrame:
    return events.withColumn("event_date", F.to_date("event_time"))


def _is(event_type: str) -> Column:
    return F.col("event_type") == event_type


def daily_counters(spec: FeatureSpec) -> list[Column]:
    """Aggregates every daily table has: one count per spec counter, engagements, rating sums."""
    engaged = F.col("event_type").isin(list(spec.interaction_events))
    rated = _is("rating") & F.col("value").isNotNull()
    return [
        *(F.count(F.when(_is(event_type), 1)).alias(counter) for counter, event_type in spec.counters.items()),
        F.count(F.when(engaged, 1)).alias("engagements"),
        F.count(F.when(rated, 1)).alias("rating_count"),
        F.sum(F.when(rated, F.col("value"))).alias("rating_sum"),
        F.sum(F.when(rated, F.col("value") * F.col("value"))).alias("rating_sq_sum"),
    ]


def entity_daily(events: DataFrame, spec: FeatureSpec, keys: list[str]) -> DataFrame:
    """Counters per (keys, event_date)."""
    return events.groupBy(*keys, "event_date").agg(*daily_counters(spec))


def user_daily(events: DataFrame, spec: FeatureSpec) -> DataFrame:
    """Counters per user and day, plus the day's engaged items, newest first (at most N)."""
    engaged = F.col("event_type").isin(list(spec.interaction_events))
    newest_first = F.sort_array(
        F.collect_list(F.when(engaged, F.struct("event_time", "event_id", "item_id"))), asc=False
    )
    items = F.slice(F.transform(newest_first, lambda e: e["item_id"]), 1, spec.last_n_items)
    return events.groupBy("user_id", "event_date").agg(*daily_counters(spec), items.alias("last_items"))


def user_category_daily(events_with_category: DataFrame, spec: FeatureSpec) -> DataFrame:
    return entity_daily(events_with_category, spec, ["user_id", "category"])
