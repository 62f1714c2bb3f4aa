"""Daily feature snapshots for a range of days, time-machine style.

Snapshot D holds what was known at the end of day D (UTC): facts with event date <= D. It is built
from the per-day aggregates of the last `max_window` days (windows are roll-ups, so the cost of a
day does not grow with history) and from each entity's row as of the day before the range, which
carries the state that needs all history: first/last active day, the last N engaged items,
attributes as of D.

Rows are stored only where an entity can differ from "inactive" (activity inside its longest window,
or attributes that changed that day), so cost and size follow activity, not catalogue x calendar;
features/snapshot_as_of.py resolves any other (entity, day) to the same full row, with the day's
inactive values (`inactive_values`). A range S..E is built in one pass: daily rows are exploded onto
the snapshot days whose windows they fall in, and the carried state runs along a per-entity window
ordered by day over those rows only. Library code: DataFrames in, DataFrames out;
jobs/build_snapshot.py reads and writes the tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, SparkSession, Window, WindowSpec
from pyspark.sql import functions as F

from features.feature_spec import Feature, FeatureSpec
from features.snapshot_as_of import day_features

MEASURES_EXTRA = ("engagements", "rating_count", "rating_sum", "rating_sq_sum")


def _windows(spec: FeatureSpec) -> list[int]:
    return sorted(set(spec.windows_days) | {f.window for f in spec.features if f.window})


def date_frame(spark: SparkSession, dates: list[dt.date]) -> DataFrame:
    return spark.createDataFrame([(d,) for d in dates], "snapshot_date date")


def entity_windows(spec: FeatureSpec, entity: str) -> list[int]:
    """The windows an entity's features need (all spec windows for a feature expanded over them)."""
    windows = {f.window for f in spec.for_entity(entity) if f.window}
    if entity == "user":
        top_window = spec.feature("user_top_categories").window  # computed from user×category sums
        assert top_window is not None, "user_top_categories has a window in the spec"
        windows.add(top_window)
    return sorted(windows)


def window_sums(
    daily: DataFrame, keys: list[str], spec: FeatureSpec, start: dt.date, end: dt.date, windows: list[int] | None = None
) -> DataFrame:
    """For each (keys, snapshot_date in start..end) with activity in the longest window: every daily
    measure summed over each window w (days D-w+1 .. D), as columns `<measure>_<w>d`. Materialized
    (local checkpoint): the sums feed both the features and the day's CTR prior."""
    windows = windows or _windows(spec)
    longest = max(windows)
    measures = [*spec.counters, *MEASURES_EXTRA]
    rows = daily.where(F.col("event_date").between(F.lit(start - dt.timedelta(days=longest - 1)), F.lit(end)))
    exploded = rows.withColumn(
        "snapshot_date",
        F.explode(
            F.sequence(
                F.greatest("event_date", F.lit(start)), F.least(F.date_add("event_date", longest - 1), F.lit(end))
            )
        ),
    )
    age = F.datediff("snapshot_date", "event_date")
    sums = [
        F.sum(F.when(age < w, F.coalesce(F.col(m), F.lit(0)))).alias(f"{m}_{w}d") for w in windows for m in measures
    ]
    return exploded.groupBy(*keys, "snapshot_date").agg(*sums).localCheckpoint()


def ctr_priors(
    sums: DataFrame,
    spec: FeatureSpec,
    windows: Sequence[int] | None = None,
    measure: str = "{m}_{w}d",
    alias: str = "prior_{w}d",
) -> DataFrame:
    """The CTR prior, defined once: per snapshot day and window, the CTR of every entity together (sum of
    clicks / sum of impressions), or the spec's fallback when the window has no impressions at all.
    `sums` has the window sums as `measure` (default clicks_7d, impressions_7d; the samples job reads
    them from the item snapshot as item_clicks_7d ...); the windows default to those `sums` holds."""
    if windows is None:
        windows = sorted(int(c.split("_")[-1][:-1]) for c in sums.columns if c.startswith("clicks_"))
    priors = []
    for w in windows:
        clicks = F.sum(measure.format(m="clicks", w=w))
        impressions = F.sum(measure.format(m="impressions", w=w))
        priors.append(
            F.when(impressions > 0, clicks / impressions)
            .otherwise(F.lit(spec.ctr_prior_fallback))
            .alias(alias.format(w=w))
        )
    return sums.groupBy("snapshot_date").agg(*priors)


def active_grid(keys: list[str], sums: DataFrame, dims: DataFrame) -> DataFrame:
    """The candidate rows (keys, snapshot_date): activity inside a window ending that day (a row of the
    window sums) or a dimension drop row that day. Never catalogue x calendar: an entity without
    either has no candidate row, and is resolved as inactive from its latest row (features/snapshot_as_of.py)."""
    return (
        sums.select(*keys, "snapshot_date")
        .unionByName(dims.select(*keys, F.col("drop_date").alias("snapshot_date")))
        .distinct()
    )


def keep_rows_that_differ(frame: DataFrame, sums: DataFrame, keys: list[str]) -> DataFrame:
    """The rows stored: activity inside the longest window, or attributes that changed that day."""
    in_window = sums.select(*keys, "snapshot_date", F.lit(True).alias("_in_window"))
    return (
        frame.join(in_window, [*keys, "snapshot_date"], "left")
        .where(F.col("_in_window").isNotNull() | F.col("_attrs_changed"))
        .drop("_in_window", "_attrs_changed")
    )


def _running(keys: list[str]) -> WindowSpec:
    return Window.partitionBy(*keys).orderBy("snapshot_date").rowsBetween(Window.unboundedPreceding, Window.currentRow)


def _attribute_features(spec: FeatureSpec, entity: str) -> list[Feature]:
    return [f for f in spec.for_entity(entity) if f.kind == "attribute"]


def attributes_as_of(
    grid: DataFrame, keys: list[str], spec: FeatureSpec, entity: str, dims: DataFrame, base: DataFrame
) -> DataFrame:
    """Adds `attrs`: the entity's row from the latest dimension drop <= D (or the base's, as of the day
    before the range), and `_attrs_changed`: whether they differ from the day before."""
    features = _attribute_features(spec, entity)
    today = dims.select(
        *keys,
        F.col("drop_date").alias("snapshot_date"),
        F.struct(*[F.col(f.column).cast(f.dtype).alias(f.name) for f in features]).alias("_attrs_today"),
    )
    previous = base.select(
        *keys, F.struct(*[F.col(f.name).cast(f.dtype).alias(f.name) for f in features]).alias("_attrs_base")
    )
    ordered = Window.partitionBy(*keys).orderBy("snapshot_date")
    return (
        grid.join(today, [*keys, "snapshot_date"], "left")
        .join(previous, keys, "left")
        .withColumn(
            "attrs", F.coalesce(F.last("_attrs_today", ignorenulls=True).over(_running(keys)), F.col("_attrs_base"))
        )
        .withColumn(
            "_attrs_changed", ~F.col("attrs").eqNullSafe(F.coalesce(F.lag("attrs").over(ordered), F.col("_attrs_base")))
        )
        .drop("_attrs_today", "_attrs_base")
    )


def feature_column(feature: Feature, spec: FeatureSpec) -> Column:
    """The expression of one spec feature over the assembled frame (window sums, state, attrs)."""
    w, kind = feature.window, feature.kind
    if kind == "window_count":
        value = F.coalesce(F.col(f"{feature.counter}_{w}d"), F.lit(0))
    elif kind == "smoothed_ctr":
        strength = F.lit(spec.ctr_prior_strength)
        clicks = F.coalesce(F.col(f"clicks_{w}d"), F.lit(0))
        impressions = F.coalesce(F.col(f"impressions_{w}d"), F.lit(0))
        value = (clicks + strength * F.col(f"prior_{w}d")) / (impressions + strength)
    elif kind in ("rating_mean", "rating_std"):
        count = F.col(f"rating_count_{w}d")
        mean = F.col(f"rating_sum_{w}d") / count
        variance = F.greatest(F.col(f"rating_sq_sum_{w}d") / count - mean * mean, F.lit(0.0))
        value = F.when(count > 0, mean if kind == "rating_mean" else F.sqrt(variance))
    elif kind in ("first_date", "last_date"):
        value = F.col(kind)
    elif kind == "days_since_first":
        value = F.datediff("snapshot_date", "first_date")
    elif kind == "days_since_last":
        value = F.datediff("snapshot_date", "last_date")
    elif kind in ("last_items", "top_categories", "top_category_shares"):
        value = F.coalesce(F.col(kind), F.array().cast(feature.dtype))
    elif kind == "popularity_rank":
        value = F.rank().over(
            Window.partitionBy("snapshot_date").orderBy(F.desc(F.coalesce(F.col(f"engagements_{w}d"), F.lit(0))))
        )
    elif kind == "attribute":
        value = F.col("attrs")[feature.name]
    elif kind == "days_since_release":
        release = next(f for f in _attribute_features(spec, feature.entity) if f.source == "release_date")
        value = F.datediff("snapshot_date", F.col("attrs")[release.name])
    else:
        raise ValueError(f"feature {feature.name}: unknown kind {kind}")
    return value.cast(feature.dtype).alias(feature.name)


def select_features(frame: DataFrame, spec: FeatureSpec, entity: str) -> DataFrame:
    keys = spec.entities[entity]["key"]
    return frame.select(*keys, *[feature_column(f, spec) for f in spec.for_entity(entity)], "snapshot_date")


def _with_priors(frame: DataFrame, sums: DataFrame, spec: FeatureSpec) -> DataFrame:
    priors = ctr_priors(sums, spec)
    return frame.join(F.broadcast(priors), "snapshot_date", "left").fillna(
        spec.ctr_prior_fallback, [c for c in priors.columns if c.startswith("prior_")]
    )


def item_snapshot(spec: FeatureSpec, sums: DataFrame, base: DataFrame, dims: DataFrame) -> DataFrame:
    """sums: window_sums of item_daily over the range; base: item rows as of the day before the range
    (resolved, any superset of the range's items; may be empty); dims: items drops of the range."""
    keys = ["item_id"]
    frame = attributes_as_of(active_grid(keys, sums, dims), keys, spec, "item", dims, base)
    first_seen = base.select(*keys, F.col("item_first_seen_date").alias("_base_first"))
    frame = frame.join(first_seen, keys, "left").withColumn(
        "first_date", F.coalesce("_base_first", F.min("snapshot_date").over(_running(keys)))
    )
    frame = keep_rows_that_differ(frame, sums, keys).join(sums, [*keys, "snapshot_date"], "left")
    return select_features(_with_priors(frame, sums, spec), spec, "item")


def inactive_values(spec: FeatureSpec, entity: str, dates: DataFrame, sums: DataFrame) -> DataFrame:
    """One row per day of `dates`: the value, for an entity without activity in its windows that day,
    of each feature that depends on the day only (snapshot_as_of.day_features), computed with the
    same expressions as the stored rows (a smoothed CTR of zero counts is bit for bit the same; a
    competition rank without engagements is 1 + the number of entities with engagements)."""
    keys = spec.entities[entity]["key"]
    features = day_features(spec, entity)
    measures = [c for c in sums.columns if c not in (*keys, "snapshot_date")]
    frame = _with_priors(
        dates.select("snapshot_date", *[F.lit(None).cast("long").alias(m) for m in measures]), sums, spec
    )
    ranked = [f for f in features if f.kind == "popularity_rank"]
    if ranked:
        engaged = sums.groupBy("snapshot_date").agg(
            *[F.count(F.when(F.col(f"engagements_{f.window}d") > 0, 1)).alias(f"_engaged_{f.name}") for f in ranked]
        )
        frame = frame.join(engaged, "snapshot_date", "left")
    return frame.select(
        *[
            (F.coalesce(F.col(f"_engaged_{f.name}"), F.lit(0)) + 1).cast(f.dtype).alias(f.name)
            if f in ranked
            else feature_column(f, spec)
            for f in features
        ],
        "snapshot_date",
    )


def user_category_snapshot(spec: FeatureSpec, sums: DataFrame) -> DataFrame:
    """sums: window_sums of user_category_daily. Rows for pairs with activity in the longest window."""
    return select_features(_with_priors(sums, sums, spec), spec, "user_category")


def top_categories(spec: FeatureSpec, category_sums: DataFrame) -> DataFrame:
    """Per (user, day): the top-K categories by engagements in the window, and their shares. Ties
    (schemas/features.yaml): more engagements first, then the category name in ascending order."""
    window = spec.feature("user_top_categories").window
    engagements = F.col(f"engagements_{window}d")
    order = F.struct((-engagements).alias("minus_n"), F.col("category"))  # ascending: most first, then by name
    ranked = (
        category_sums.where(engagements > 0)
        .groupBy("user_id", "snapshot_date")
        .agg(F.sort_array(F.collect_list(order), asc=True).alias("_ranked"), F.sum(engagements).alias("_total"))
    )
    top = F.slice("_ranked", 1, spec.top_categories)
    return ranked.select(
        "user_id",
        "snapshot_date",
        F.transform(top, lambda c: c["category"]).alias("top_categories"),
        F.transform(top, lambda c: -c["minus_n"] / F.col("_total")).alias("top_category_shares"),
    )


def user_snapshot(
    spec: FeatureSpec,
    start: dt.date,
    end: dt.date,
    daily: DataFrame,
    sums: DataFrame,
    base: DataFrame,
    dims: DataFrame,
    category_sums: DataFrame,
) -> DataFrame:
    """daily: user_daily of start..end (more days are ignored); sums: its window_sums over the range;
    base: user rows as of the day before the range (resolved; may be empty); dims: users drops of the
    range; category_sums: window_sums of user_category_daily."""
    keys = ["user_id"]
    running = _running(keys)
    in_range = daily.where(F.col("event_date").between(F.lit(start), F.lit(end)))
    # last N engaged items: the N most recent engaged days hold at least N items, so a bounded frame suffices
    engaged_days = Window.partitionBy(*keys).orderBy("event_date").rowsBetween(-(spec.last_n_items - 1), 0)
    recent = in_range.where(F.size("last_items") > 0).select(
        *keys,
        F.col("event_date").alias("snapshot_date"),
        F.flatten(F.reverse(F.collect_list("last_items").over(engaged_days))).alias("_recent_items"),
    )
    activity = in_range.select(*keys, F.col("event_date").alias("snapshot_date"), F.lit(True).alias("_active"))
    state = base.select(
        *keys,
        F.col("user_first_active_date").alias("_base_first"),
        F.col("user_last_active_date").alias("_base_last"),
        F.col("user_last_items").alias("_base_items"),
    )
    no_items = F.array().cast("array<bigint>")
    frame = (
        attributes_as_of(active_grid(keys, sums, dims), keys, spec, "user", dims, base)
        .join(activity, [*keys, "snapshot_date"], "left")
        .join(recent, [*keys, "snapshot_date"], "left")
        .join(state, keys, "left")
        .withColumn(
            "first_date",
            F.coalesce("_base_first", F.min(F.when(F.col("_active"), F.col("snapshot_date"))).over(running)),
        )
        .withColumn(
            "last_date",
            F.coalesce(F.max(F.when(F.col("_active"), F.col("snapshot_date"))).over(running), F.col("_base_last")),
        )
        .withColumn(
            "last_items",
            F.slice(
                F.concat(
                    F.coalesce(F.last("_recent_items", ignorenulls=True).over(running), no_items),
                    F.coalesce(F.col("_base_items"), no_items),
                ),
                1,
                spec.last_n_items,
            ),
        )
    )
    frame = (
        keep_rows_that_differ(frame, sums, keys)
        .join(sums, [*keys, "snapshot_date"], "left")
        .join(top_categories(spec, category_sums), [*keys, "snapshot_date"], "left")
    )
    return select_features(_with_priors(frame, sums, spec), spec, "user")
