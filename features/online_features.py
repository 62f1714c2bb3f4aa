"""What the online store publishes for day D, as Spark DataFrames: the model-role features of every user,
item and user x category known as of D, with exactly the values the samples of day D+1 join.

The values go through features.samples.with_default, the expression the point-in-time join uses, and the
defaults of an unknown entity are that same expression over a row of nulls, so the request builder never
re-implements a default. Users and items are resolved with snapshot_as_of.read_as_of (inactive ones
included), user x category rows are the stored partition of D (as samples join them), priors are
ctr_priors of the stored item partition of D. The store keeps them day-free (features.day_free: the
days-since, smoothed CTR and tail-rank parts rebuilt by the request builder from the version's
metadata, day_parts), so an entity whose facts did not change is not rewritten the next day.
"""

from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features import day_free, snapshot
from features import snapshot_as_of as as_of
from features.feature_spec import FeatureSpec
from features.online_store import ITEM_JOIN_CATEGORY
from features.samples import ctr_priors, with_default
from features.tables import Tables, partition_dates

PUBLISHED_ENTITIES = ("user", "item", "user_category")
ROW_SCHEMA = "entity string, key string, value string"


def _key(entity: str) -> F.Column:
    if entity == "user_category":
        return F.concat_ws(":", F.col("user_id").cast("string"), F.col("category"))
    return F.col(f"{entity}_id").cast("string")


def _values(spec: FeatureSpec, entity: str, extra: list[F.Column] | None = None) -> F.Column:
    features = [f for f in spec.model_features() if f.entity == entity]
    return F.to_json(F.struct(*[with_default(f, spec) for f in features], *(extra or [])))


def _day_free_values(
    spec: FeatureSpec, entity: str, day: dt.date, tails: dict[str, int], extra: list[F.Column] | None = None
) -> F.Column:
    """The stored value of features.day_free: the samples' values of the features that do not move with
    the day, and under `_day` what the request builder rebuilds the others from (over the resolved
    snapshot row, before defaults)."""
    main, since, ctr, tail = [], [], [], []
    for f in (f for f in spec.model_features() if f.entity == entity):
        part = day_free.day_part(f)
        if part == "since":
            since.append((F.col(f.name) - F.lit(day_free.epoch_day(day))).alias(f.name))
        elif part == "ctr":
            clicks, impressions = day_free.ctr_counts(spec, f)
            ctr.append(F.array(F.col(clicks).cast("long"), F.col(impressions).cast("long")).alias(f.name))
        elif part == "tail" and f.name in tails:
            is_tail = F.coalesce(F.col(f.name) == F.lit(tails[f.name]), F.lit(False))
            tail.append(F.when(is_tail, F.lit(True)).alias(f.name))
            main.append(F.when(~is_tail, with_default(f, spec)).alias(f.name))
        else:
            main.append(with_default(f, spec))
    parts = [F.struct(*cols).alias(name) for name, cols in (("since", since), ("ctr", ctr), ("tail", tail)) if cols]
    day_part = [F.struct(*parts).alias(day_free.DAY_KEY)] if parts else []
    return F.to_json(F.struct(*main, *(extra or []), *day_part))


def day_parts(tables: Tables, spec: FeatureSpec, day: dt.date, versions: dict[str, int]) -> dict:
    """What a version's metadata holds for day_free.materialize: per entity the CTR prior of each
    smoothed CTR's window (features.snapshot.ctr_priors over the stored partition of `day`, which holds
    every entity with activity in the windows: the same sums as the snapshot's) and the tail popularity
    ranks (the inactive row of `day`). One small aggregate per table."""
    priors: dict[str, dict[str, float]] = {}
    tails: dict[str, dict[str, int]] = {}
    for entity in PUBLISHED_ENTITIES:
        features = [f for f in spec.model_features() if f.entity == entity]
        windows = sorted({int(f.window) for f in features if day_free.day_part(f) == "ctr" and f.window})
        if windows:
            name = spec.entities[entity]["table"]
            stored = tables.read(name, version=versions[name], partitions=[day])
            # the day's one row (none when nobody was active: the snapshot's fallback then)
            row = snapshot.ctr_priors(stored, spec, windows, measure=f"{entity}_{{m}}_{{w}}d", alias="{w}").first()
            priors[entity] = {str(w): row[str(w)] if row is not None else spec.ctr_prior_fallback for w in windows}
        ranked = [f for f in features if day_free.day_part(f) == "tail"]
        if ranked and tables.exists(as_of.inactive_table(entity)):
            inactive = tables.read(
                as_of.inactive_table(entity), version=versions[as_of.inactive_table(entity)], partitions=[day]
            )
            row = inactive.select(*[F.col(f.name).cast(f.dtype).alias(f.name) for f in ranked]).first()
            if row is not None:
                tails[entity] = {f.name: row[f.name] for f in ranked if row[f.name] is not None}
    return {
        "value_format": day_free.VALUE_FORMAT,
        "ctr_prior_strength": spec.ctr_prior_strength,
        "priors": priors,
        "tails": tails,
    }


def snapshot_versions(tables: Tables) -> dict[str, int]:
    return {
        name: tables.version(name)
        for name in (
            "user_snapshot",
            "item_snapshot",
            "user_category_snapshot",
            as_of.inactive_table("user"),
            as_of.inactive_table("item"),
        )
    }


def entity_rows(
    tables: Tables, spec: FeatureSpec, day: dt.date, versions: dict[str, int], tails: dict | None = None
) -> DataFrame:
    """(entity, key, value JSON) for every user, item and user x category known as of `day`: the values
    the samples join, or with `tails` (day_parts' tails) the day-free values the online store keeps."""

    def value(entity: str, extra: list[F.Column] | None = None) -> F.Column:
        if tails is None:
            return _values(spec, entity, extra)
        return _day_free_values(spec, entity, day, tails.get(entity, {}), extra)

    priors = F.broadcast(
        ctr_priors(tables.read("item_snapshot", version=versions["item_snapshot"], partitions=[day]), spec)
    )
    parts = []
    for entity in ("user", "item"):
        requests = as_of.known_entities(tables, spec, entity, day).withColumn("snapshot_date", F.lit(day))
        resolved = as_of.read_as_of(
            tables,
            spec,
            entity,
            requests,
            [day],
            version=versions[f"{entity}_snapshot"],
            inactive_version=versions[as_of.inactive_table(entity)],
        )
        extra = [F.col("item_category").alias(ITEM_JOIN_CATEGORY)] if entity == "item" else []
        parts.append(
            resolved.join(priors, "snapshot_date", "left").select(
                F.lit(entity).alias("entity"), _key(entity).alias("key"), value(entity, extra).alias("value")
            )
        )
    categories = tables.read(
        "user_category_snapshot",
        version=versions["user_category_snapshot"],
        partitions=[d for d in partition_dates(tables, "user_category_snapshot") if d == day],
    )
    parts.append(
        categories.join(priors, "snapshot_date", "left").select(
            F.lit("user_category").alias("entity"),
            _key("user_category").alias("key"),
            value("user_category").alias("value"),
        )
    )
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.unionByName(part)
    return rows


def removed_rows(tables: Tables, spec: FeatureSpec, rows: DataFrame, previous_day: dt.date | None) -> DataFrame:
    """Entities the previous publish (of `previous_day`) held that `rows` no longer has: user x category
    pairs without activity in the last 30 days (and, publishing an earlier day than before, users and
    items not known yet): (entity, key, null) so the writers mark them absent."""
    if previous_day is None:
        return rows.sparkSession.createDataFrame([], ROW_SCHEMA)
    before = []
    if previous_day in partition_dates(tables, "user_category_snapshot"):
        before.append(
            tables.read("user_category_snapshot", partitions=[previous_day]).select(
                F.lit("user_category").alias("entity"), _key("user_category").alias("key")
            )
        )
    for entity in ("user", "item"):
        before.append(
            as_of.known_entities(tables, spec, entity, previous_day).select(
                F.lit(entity).alias("entity"), _key(entity).alias("key")
            )
        )
    keys = before[0]
    for part in before[1:]:
        keys = keys.unionByName(part)
    return keys.join(rows.select("entity", "key"), ["entity", "key"], "left_anti").select(
        "entity", "key", F.lit(None).cast("string").alias("value")
    )


def default_values(tables: Tables, spec: FeatureSpec, day: dt.date, versions: dict[str, int]) -> dict[str, dict]:
    """{entity: {feature: value}}: what an entity missing from the snapshots gets (context included:
    what a missing device, page or position becomes), computed by with_default over a row of nulls."""
    spark = tables.spark
    priors = ctr_priors(tables.read("item_snapshot", version=versions["item_snapshot"], partitions=[day]), spec)
    nulls = (
        spark.createDataFrame([(day,)], "snapshot_date date")
        .join(priors, "snapshot_date", "left")
        .select("*", *[F.lit(None).cast(f.dtype).alias(f.name) for f in spec.model_features()])
    )
    entities = sorted({f.entity for f in spec.model_features()})
    row = nulls.select(*[_values(spec, entity).alias(entity) for entity in entities]).first()
    assert row is not None  # one row: the day, left-joined with its one row of priors
    return {entity: json.loads(row[entity]) for entity in entities}
