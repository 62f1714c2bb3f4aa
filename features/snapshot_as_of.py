"""Any entity's snapshot row as of any day, from sparse snapshot rows and the day's inactive values.

`user_snapshot` and `item_snapshot` hold a row for (entity, D) only where the entity can differ
from "inactive": it had activity inside the longest window of its features ending D, or its
attributes changed on D (its first dimension drop included). Every other (entity, D) of a known
entity is resolved from two compact pieces of state:

  * the entity's latest row dated r < D (a row per change: state only changes on rows), and
  * `<entity>_snapshot_inactive`: one row per day with the values that depend on the day only
    (a smoothed CTR without impressions is the day's prior, a rank without engagements is
    1 + the number of items with engagements).

With no activity in any window after r, each feature of D follows from its kind (INACTIVE_RULES):
window counts are 0, rating means null, top categories empty, state and attributes carried from r,
days-since shifted by D - r, day-dependent values taken from the inactive row of D. The result is
the row the dense layout (every known entity on every day) had, value for value.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features.day_free import INACTIVE_RULES
from features.feature_spec import Feature, FeatureSpec
from features.tables import Tables, partition_dates


def inactive_table(entity: str) -> str:
    return f"{entity}_snapshot_inactive"


def built_days(tables: Tables, entity: str) -> set[dt.date]:
    """The days whose snapshot was built (the inactive table has a row for every built day, also when
    no entity had a row that day)."""
    return partition_dates(tables, inactive_table(entity))


def day_features(spec: FeatureSpec, entity: str) -> list[Feature]:
    """The features whose inactive value depends on the day only (stored in the inactive table)."""
    return [f for f in spec.for_entity(entity) if INACTIVE_RULES[f.kind] == "day"]


def _inactive_value(feature: Feature, row: Column, row_date: Column, day: Column) -> Column:
    rule = INACTIVE_RULES[feature.kind]
    if rule == "zero":
        value = F.lit(0)
    elif rule == "null":
        value = F.lit(None)
    elif rule == "empty":
        value = F.array()
    elif rule == "carried":
        value = row[feature.name]
    elif rule == "shifted":
        value = row[feature.name] + F.datediff(day, row_date)
    else:  # day: from the inactive row of that day, joined as a column of the feature's name
        value = F.col(f"_day_{feature.name}")
    return value.cast(feature.dtype)


def resolve(requests: DataFrame, rows: DataFrame, inactive: DataFrame, spec: FeatureSpec, entity: str) -> DataFrame:
    """Full snapshot rows (the table's columns) for each distinct request (keys, snapshot_date).

    rows: snapshot rows holding, for every request, the entity's latest row dated <= its day (more
    rows are fine); inactive: the inactive table's rows of the requested days. Requests for an entity
    with no row by then (not known yet) are left out, as the dense layout had no row for them."""
    keys = spec.entities[entity]["key"]
    names = [f.name for f in spec.for_entity(entity)]
    packed = rows.select(
        *keys,
        F.col("snapshot_date").alias("_at"),
        F.lit(0).alias("_request"),
        F.struct(*names, F.col("snapshot_date").alias("_row_date")).alias("_row"),
    )
    asked = (
        requests.select(*keys, F.col("snapshot_date").alias("_at"))
        .distinct()
        .select(
            *keys, "_at", F.lit(1).alias("_request"), F.lit(None).cast(packed.schema["_row"].dataType).alias("_row")
        )
    )
    latest = Window.partitionBy(*keys).orderBy("_at", "_request").rowsBetween(Window.unboundedPreceding, 0)
    found = (
        packed.unionByName(asked)
        .withColumn("_row", F.last("_row", ignorenulls=True).over(latest))
        .where((F.col("_request") == 1) & F.col("_row").isNotNull())
    )
    day_names = [f.name for f in day_features(spec, entity)]
    if day_names:
        found = found.join(
            F.broadcast(
                inactive.select(F.col("snapshot_date").alias("_at"), *[F.col(n).alias(f"_day_{n}") for n in day_names])
            ),
            "_at",
            "left",
        )
    row, row_date, day = F.col("_row"), F.col("_row._row_date"), F.col("_at")
    exact = row_date == day
    return found.select(
        *keys,
        *[
            F.when(exact, row[f.name].cast(f.dtype)).otherwise(_inactive_value(f, row, row_date, day)).alias(f.name)
            for f in spec.for_entity(entity)
        ],
        day.alias("snapshot_date"),
    )


def read_as_of(
    tables: Tables,
    spec: FeatureSpec,
    entity: str,
    requests: DataFrame,
    days: list[dt.date],
    version: int | None = None,
    inactive_version: int | None = None,
) -> DataFrame:
    """resolve() over the stored snapshot: requests (keys, snapshot_date) on `days`. Reads the
    partitions of min(days)..max(days) and, only for the requested entities without a row in them by
    their day, each one's latest row of the older partitions (pruned by date, semi-joined by key)."""
    keys = spec.entities[entity]["key"]
    name = spec.entities[entity]["table"]
    built = partition_dates(tables, name)  # partitions are only ever replaced: a pinned version has a subset
    first, last = min(days), max(days)
    recent = tables.read(name, version=version, partitions=sorted(d for d in built if first <= d <= last))
    older = sorted(d for d in built if d < first)
    rows = recent
    if older:
        asked = requests.select(*keys, F.col("snapshot_date").alias("_at")).alias("q")
        seen = recent.select(*keys, F.col("snapshot_date").alias("_seen")).alias("r")
        covered = F.col("r._seen") <= F.col("q._at")
        for key in keys:
            covered = covered & (F.col(f"q.{key}") == F.col(f"r.{key}"))
        missing = asked.join(seen, covered, "left_anti").select(*[F.col(f"q.{k}").alias(k) for k in keys]).distinct()
        history = tables.read(name, version=version, partitions=older).join(missing, keys, "left_semi")
        newest = Window.partitionBy(*keys).orderBy(F.desc("snapshot_date"))
        rows = rows.unionByName(history.withColumn("_n", F.row_number().over(newest)).where("_n = 1").drop("_n"))
    inactive = (
        tables.read(inactive_table(entity), version=inactive_version, partitions=days)
        if tables.exists(inactive_table(entity))
        else tables.spark.createDataFrame([], "snapshot_date date")
    )
    return resolve(requests, rows, inactive, spec, entity)


def known_entities(tables: Tables, spec: FeatureSpec, entity: str, day: dt.date) -> DataFrame:
    """Keys of every entity with a snapshot row dated <= day (known as of that day)."""
    name = spec.entities[entity]["table"]
    keys = spec.entities[entity]["key"]
    return (
        tables.read(name, partitions=sorted(d for d in partition_dates(tables, name) if d <= day))
        .select(*keys)
        .distinct()
    )


def dense_snapshot(tables: Tables, spec: FeatureSpec, entity: str, days: list[dt.date]) -> DataFrame:
    """Every known entity on each of `days` (the dense layout): for tests, audits and exports of a
    whole day. Costs catalogue x days; analysts asking about a few entities use read_as_of."""
    spark = tables.spark
    dates = spark.createDataFrame([(d,) for d in days], "snapshot_date date")
    requests = known_entities(tables, spec, entity, max(days)).crossJoin(F.broadcast(dates))
    return read_as_of(tables, spec, entity, requests, days)
