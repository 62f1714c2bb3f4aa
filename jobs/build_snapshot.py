"""Build the daily aggregates and feature snapshots for one day or a range (backfill).

    spark-submit jobs/build_snapshot.py --config conf/demo.yaml --date 2026-01-14
    recpipe snapshot --config conf/demo.yaml --start 2026-01-01 --end 2026-01-14

Tables written, each partition of the range replaced in one commit per table:
    item_daily, user_daily, user_category_daily        (partitioned by event_date)
    item_snapshot, user_snapshot, user_category_snapshot  (partitioned by snapshot_date; rows only for
        entities with activity inside their longest window or, for users and items, changed attributes)
    item_snapshot_inactive, user_snapshot_inactive   (one row per built day: what an entity without
        activity has that depends on the day; features/snapshot_as_of.py resolves any entity and day)

Late data policy: snapshot D uses every ingested event with event date <= D. Events for day d can
arrive in drops up to d + allowed lateness (48 h), so building day D also rebuilds the
`snapshot.rebuild_days` days before it (default: the lateness in days): the late events of those
days, which arrived in drops up to D, are picked up in their own day's aggregates and in every later
window and state. Older late data is picked up by rebuilding its range with --start/--end. The
replaced snapshot versions stay readable by time travel: what was known then, and what is known now.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # started as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features import daily_aggregates as daily
from features import ingest_runs, snapshot_runs
from features import snapshot
from features import snapshot_as_of as as_of
from features.feature_spec import FeatureSpec, load_spec
from features.schemas import load_schema
from features.tables import Tables, partition_dates
from jobs import quality_gate
from jobs.config import date_range
from jobs.run_info import new_run, new_run_id
from jobs.settings import Settings, as_settings

KEY_TYPES = {"user_id": "bigint", "item_id": "bigint", "category": "string"}

_log = logging.getLogger(__name__)


def snapshot_ddl(spec: FeatureSpec, entity: str) -> str:
    keys = [f"{k} {KEY_TYPES[k]}" for k in spec.entities[entity]["key"]]
    return ", ".join([*keys, *(f"{f.name} {f.dtype}" for f in spec.for_entity(entity)), "snapshot_date date"])


def _read_existing(tables: Tables, name: str, days: list[dt.date], empty_ddl: str) -> DataFrame:
    """The given day partitions of a table that may not exist yet (then: no rows, given schema)."""
    if not tables.exists(name):
        return tables.spark.createDataFrame([], empty_ddl)
    return tables.read(name, partitions=sorted(partition_dates(tables, name) & set(days)))


def _base(
    tables: Tables, spec: FeatureSpec, entity: str, sums: DataFrame, dims: DataFrame, start: dt.date
) -> DataFrame:
    """The rows as of the day before `start` of the entities the range has candidate rows for (the
    state they carry: first/last active day, last items, attributes), however long ago they were last
    active: snapshot_as_of.read_as_of."""
    keys = spec.entities[entity]["key"]
    table = spec.entities[entity]["table"]
    if not tables.exists(table):
        return tables.spark.createDataFrame([], snapshot_ddl(spec, entity))
    requests = (
        snapshot.active_grid(keys, sums, dims)
        .select(*keys)
        .distinct()
        .withColumn("snapshot_date", F.lit(start - dt.timedelta(days=1)))
    )
    return as_of.read_as_of(tables, spec, entity, requests, [start - dt.timedelta(days=1)])


def build_snapshots(
    spark: SparkSession,
    tables: Tables,
    config: Settings | dict,
    dates: list[dt.date],
    allow_missing: bool = False,
    cascade: bool = True,
) -> list[dict]:
    settings = as_settings(config)
    spec = load_spec()
    lateness = settings.ingest.lateness_days
    run_id = new_run_id()
    days = snapshot_runs.plan_dates(
        tables, dates, allow_missing or settings.ingest.allow_missing_drops, settings.rebuild_days, cascade
    )
    start, end = days[0], days[-1]
    history = date_range(start - dt.timedelta(days=spec.max_window - 1), end)
    versions = {name: tables.version(name) for name in ("events", "users", "items") if tables.exists(name)}
    run = new_run("snapshot", run_id, partitions=[d.isoformat() for d in days], input_versions=versions)

    drops = sorted(
        partition_dates(tables, "events")
        & set(date_range(start - dt.timedelta(days=1), end + dt.timedelta(days=lateness)))
    )
    ingest_runs.require_complete(tables, drops, "snapshot", versions["events"])
    events = daily.with_event_date(tables.read("events", version=versions["events"], partitions=drops)).where(
        F.col("event_date").between(F.lit(start), F.lit(end))
    )
    dims = {
        name: (
            tables.read(name, version=versions[name], partitions=days)
            if name in versions
            else spark.createDataFrame([], f"{load_schema(name).spark_ddl()}, drop_date date")
        )
        for name in ("users", "items")
    }
    dates_frame = snapshot.date_frame(spark, days)
    summary: list[dict[str, Any]] = []

    def write(name: str, frame: DataFrame, column: str) -> None:
        version = tables.replace_partitions(name, frame, column, days, run)
        summary.append(
            {
                "table": name,
                "version": version,
                "days": len(days),
                "rows": tables.row_count(name, version=version, partitions=days),
            }
        )

    write("item_daily", daily.entity_daily(events, spec, ["item_id"]), "event_date")
    write("user_daily", daily.user_daily(events, spec), "event_date")
    item_sums = snapshot.window_sums(
        _read_existing(tables, "item_daily", history, "item_id bigint, event_date date"),
        ["item_id"],
        spec,
        start,
        end,
        snapshot.entity_windows(spec, "item"),
    )
    write(
        "item_snapshot",
        snapshot.item_snapshot(
            spec, item_sums, _base(tables, spec, "item", item_sums, dims["items"], start), dims["items"]
        ),
        "snapshot_date",
    )
    write(as_of.inactive_table("item"), snapshot.inactive_values(spec, "item", dates_frame, item_sums), "snapshot_date")

    # an item with an event on day d had activity that day, so it has a stored row of d with its category
    categories = tables.read("item_snapshot", partitions=days).select(
        "item_id", F.col("snapshot_date").alias("event_date"), F.col("item_category").alias("category")
    )
    with_category = events.join(categories, ["item_id", "event_date"], "left").fillna(
        {"category": spec.feature("item_category").default}
    )
    write("user_category_daily", daily.user_category_daily(with_category, spec), "event_date")
    category_sums = snapshot.window_sums(
        _read_existing(tables, "user_category_daily", history, "user_id bigint, category string, event_date date"),
        ["user_id", "category"],
        spec,
        start,
        end,
        snapshot.entity_windows(spec, "user_category"),
    )
    write("user_category_snapshot", snapshot.user_category_snapshot(spec, category_sums), "snapshot_date")

    user_daily = _read_existing(tables, "user_daily", history, "user_id bigint, event_date date")
    user_sums = snapshot.window_sums(user_daily, ["user_id"], spec, start, end, snapshot.entity_windows(spec, "user"))
    write(
        "user_snapshot",
        snapshot.user_snapshot(
            spec,
            start,
            end,
            user_daily,
            user_sums,
            _base(tables, spec, "user", user_sums, dims["users"], start),
            dims["users"],
            category_sums,
        ),
        "snapshot_date",
    )
    write(as_of.inactive_table("user"), snapshot.inactive_values(spec, "user", dates_frame, user_sums), "snapshot_date")

    results = []
    for name in ("user_snapshot", "item_snapshot"):  # checks of schemas/quality.yaml, then the gate
        frame = tables.read(name, partitions=[start - dt.timedelta(days=1), *days])
        results += quality_gate.check_table(tables, settings, name, frame, "snapshot_date", days)
    snapshot_runs.record(tables, run, days, versions)  # which events version each rebuilt day saw
    quality_gate.record_and_enforce(tables, results, run, {r["table"]: r["version"] for r in summary})
    summary.append({"table": "quality", "results": results})
    return summary


def format_summary(rows: list[dict]) -> str:
    lines = [f"{'table':<24} {'days':>5} {'rows':>10} {'version':>7}"]
    lines += [
        f"{r['table']:<24} {r['days']:>5} {r['rows']:>10} {r['version']:>7}" for r in rows if r["table"] != "quality"
    ]
    lines += [quality_gate.format_results(r["results"]) for r in rows if r["table"] == "quality"]
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["snapshot", "--spark-submit", *sys.argv[1:]]))
