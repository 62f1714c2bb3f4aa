"""Point-in-time join: each labeled event of day E gets the features known at the end of day E-1.

User and item features come from the snapshots of E-1, "this user on this item's category" from the
user×category snapshot of E-1 (category as of E-1), context from the event itself. Entities missing
from a snapshot get the spec's defaults and an indicator column saying so. Every feature with a model
role in schemas/features.yaml is carried; nothing else.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features import snapshot
from features.errors import PipelineInputError
from features.feature_spec import Feature, FeatureSpec

INDICATORS = {"user": "user_in_snapshot", "item": "item_in_snapshot", "user_category": "user_category_in_snapshot"}
SAMPLE_COLUMNS = [
    "sample_id",
    "event_id",
    "user_id",
    "item_id",
    "event_time",
    "event_date",
    "snapshot_date",
    "label",
    "weight",
    "is_sampled_negative",
]


def _context_column(feature: Feature) -> Column:
    if feature.kind == "event_column":
        return F.col(feature.column)
    if feature.kind == "event_hour":
        return F.hour("event_time")
    if feature.kind == "event_weekday":
        return F.dayofweek("event_time")
    raise ValueError(f"feature {feature.name}: unknown context kind {feature.kind}")


def context_value(feature: Feature, event: dict):
    """The raw value _context_column computes, for one event given as a dict of event columns (the
    online request builder's twin; `event_time` a timezone-aware datetime). Defaults are applied after,
    by with_default, in both paths."""
    if feature.kind == "event_column":
        return event.get(feature.source)
    moment = event.get("event_time")
    if moment is None:
        return None
    moment = moment.astimezone(dt.timezone.utc)
    if feature.kind == "event_hour":
        return moment.hour
    if feature.kind == "event_weekday":  # Spark's dayofweek: 1 = Sunday .. 7 = Saturday
        return moment.isoweekday() % 7 + 1
    raise ValueError(f"feature {feature.name}: unknown context kind {feature.kind}")


def ctr_priors(item_snapshot: DataFrame, spec: FeatureSpec) -> DataFrame:
    """The CTR prior of each window on each snapshot day (features.snapshot.ctr_priors, the one
    definition), from the item snapshot's window counts: the default of a missing smoothed CTR. The
    stored (sparse) partitions give the same sums as every item would: inactive items count zero."""
    return snapshot.ctr_priors(item_snapshot, spec, spec.windows_days, measure="item_{m}_{w}d", alias="_prior_{w}d")


def with_default(feature: Feature, spec: FeatureSpec) -> Column:
    """The feature's column as samples carry it: cast to its dtype, a missing value replaced by the spec's
    default (`prior`: the day's all-entity CTR, from the `_prior_<w>d` columns of ctr_priors). The online
    store publishes values (and the defaults of unknown entities) through this same expression."""
    column = F.col(feature.name)
    if feature.default == "prior":
        window = feature.window if feature.window in spec.windows_days else max(spec.windows_days)
        fallback = F.coalesce(F.col(f"_prior_{window}d"), F.lit(spec.ctr_prior_fallback))
    elif isinstance(feature.default, list):
        fallback = F.array(*[F.lit(v) for v in feature.default]).cast(feature.dtype)
    elif feature.default is None:
        return column.cast(feature.dtype).alias(feature.name)
    else:
        fallback = F.lit(feature.default).cast(feature.dtype)
    return F.coalesce(column.cast(feature.dtype), fallback).alias(feature.name)


def point_in_time_join(
    labeled: DataFrame,
    user_snapshot: DataFrame,
    item_snapshot: DataFrame,
    user_category_snapshot: DataFrame,
    spec: FeatureSpec,
    priors: DataFrame | None = None,
) -> DataFrame:
    """labeled: output of features.labels; user/item snapshots: rows as of event_date - 1 of the events'
    entities (features.snapshot_as_of.read_as_of resolves inactive ones from the sparse tables);
    user_category_snapshot: the stored partitions of event_date - 1; priors: ctr_priors of the stored
    item_snapshot partitions (default: of `item_snapshot`, when it holds every item of those days)."""
    features = spec.model_features()
    by_entity = {entity: [f.name for f in features if f.entity == entity] for entity in INDICATORS}
    users = user_snapshot.select("user_id", "snapshot_date", *by_entity["user"], F.lit(True).alias(INDICATORS["user"]))
    items = item_snapshot.select("item_id", "snapshot_date", *by_entity["item"], F.lit(True).alias(INDICATORS["item"]))
    categories = user_category_snapshot.select(
        "user_id",
        F.col("category").alias("item_category"),
        "snapshot_date",
        *by_entity["user_category"],
        F.lit(True).alias(INDICATORS["user_category"]),
    )
    joined = (
        labeled.withColumn("snapshot_date", F.date_sub("event_date", 1))
        .join(users, ["user_id", "snapshot_date"], "left")
        .join(items, ["item_id", "snapshot_date"], "left")
        .join(categories, ["user_id", "item_category", "snapshot_date"], "left")
        .join(F.broadcast(priors if priors is not None else ctr_priors(item_snapshot, spec)), "snapshot_date", "left")
    )
    for feature in features:
        if feature.entity == "context":
            joined = joined.withColumn(feature.name, _context_column(feature))
    return joined.select(
        *SAMPLE_COLUMNS,
        *[F.coalesce(F.col(name), F.lit(False)).alias(name) for name in INDICATORS.values()],
        *[with_default(f, spec) for f in features],
    )


def check_one_row_per_event(samples: DataFrame, key: str = "sample_id") -> None:
    """Fail naming offending keys when a labeled event produced more than one sample."""
    duplicated = samples.groupBy(key).count().where("count > 1").orderBy(key).limit(5).collect()
    if duplicated:
        listed = ", ".join(f"{row[key]} ({row['count']} rows)" for row in duplicated)
        raise PipelineInputError(f"samples must have one row per labeled event; duplicated {key}: {listed}")
