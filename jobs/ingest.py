"""Ingest daily raw drops into the Delta tables events/users/items and their *_quarantine twins.

    spark-submit jobs/ingest.py --config conf/demo.yaml --date 2026-01-01
    recpipe ingest --config conf/demo.yaml --start 2026-01-01 --end 2026-01-14

Each day with a complete drop replaces its drop_date partition in one atomic commit per table, so a
rerun of a date leaves the tables with identical content; a day without a drop of a table keeps that
table's partition. Events already ingested from another drop go to the quarantine
(features/redelivery.py). The run's last commit is its rows in `ingest_runs` (features/ingest_runs.py):
until then the days count as incomplete and snapshot/samples refuse them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # started as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features import ingest_runs, raw_drops
from features.errors import QualityCheckFailed
from features.ingest import QUARANTINE_COLUMNS, DropWindow, parse_raw_lines, validate
from features.redelivery import horizon_partitions, redelivery_reason, relabel_late_copies, split_redelivered
from features.schemas import RAW_TABLES, load_schema
from features.tables import ConcurrentWriteError, Tables, partition_dates
from jobs import quality_gate
from jobs.run_info import new_run
from jobs.settings import Settings, as_settings

WINDOW_REASON = "event_time outside the drop's window"  # features/ingest.py's reason for a time outside the window
GLOB_CHARACTERS = re.compile(r"([\[\]{}*?\\])")
_log = logging.getLogger(__name__)


def _hadoop_path(path: Path) -> str:
    """A local file as Spark's reader takes it literally: glob characters escaped (the session uses the
    raw local file system, so `:` in a name works too; see jobs/spark_session.py)."""
    return GLOB_CHARACTERS.sub(r"\\\1", str(path))


def read_lines(spark: SparkSession, files: list[Path]) -> DataFrame:
    """Raw lines with their source file and the drop date taken from the dt=YYYY-MM-DD directory. Each
    file is read exactly once, whatever characters its name holds."""
    path = F.col("_metadata.file_path")
    decoded = F.url_decode(F.regexp_replace(path, r"\+", "%2B"))  # Spark %-encodes [ ] { } ? in the URI
    lines = spark.read.text([_hadoop_path(f) for f in files]).select("value", decoded.alias("source_file"))
    return lines.withColumn("drop_date", F.to_date(F.regexp_extract("source_file", r"dt=(\d{4}-\d{2}-\d{2})", 1)))


def _empty_valid(spark: SparkSession, schema) -> DataFrame:
    return spark.createDataFrame([], f"{schema.spark_ddl()}, drop_date date")


def _empty_quarantine(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], "drop_date date, source_file string, raw_record string, reason string")


def _without_redeliveries(
    tables: Tables,
    parsed: DataFrame,
    valid: DataFrame,
    quarantine: DataFrame,
    days: list[dt.date],
    key: str,
    horizon_days: int,
) -> tuple[DataFrame, DataFrame]:
    """Valid events minus ids already ingested from another drop of the horizon (and from an earlier
    drop of this run), and the quarantine with every redelivered copy labelled as one: the valid-looking
    copies, and the copies rejected only because an event resent days later is outside its new drop's
    window."""
    existing = horizon_partitions(days, partition_dates(tables, "events"), horizon_days)
    ingested = (
        tables.read("events", partitions=existing).select(key, "drop_date")
        if existing
        else tables.spark.createDataFrame([], f"{key} string, drop_date date")
    )
    kept, redelivered = split_redelivered(valid, ingested, key, horizon_days)
    kept = kept.persist(StorageLevel.MEMORY_AND_DISK)  # written as the table and looked up for late copies
    lines = parsed.select("drop_date", "source_file", "raw_record", key).dropDuplicates()
    late = quarantine.where(F.col("reason") == WINDOW_REASON).join(lines, ["drop_date", "source_file", "raw_record"])
    late = relabel_late_copies(late, ingested.unionByName(kept.select(key, "drop_date")), key, horizon_days)
    quarantine = (
        quarantine.where(F.col("reason") != WINDOW_REASON)
        .unionByName(late)
        .unionByName(redelivered.withColumn("reason", redelivery_reason(key)).select(*QUARANTINE_COLUMNS))
    )
    return kept, quarantine


def ingest_table(
    spark: SparkSession,
    tables: Tables,
    table: str,
    drops: dict[dt.date, raw_drops.Drop],
    window: DropWindow | None,
    run: dict,
    horizon_days: int | None,
    before_commit: Callable[[str], None],
    value_ranges: dict | None = None,
) -> dict:
    """Validates the drops of `table` and replaces exactly their days' partitions of the table and its
    quarantine. `horizon_days`: look for redelivered ids (events) that many days around each drop."""
    schema = load_schema(table)
    days = sorted(drops)
    files = [f for day in days for f in drops[day].files]
    parsed = kept = None
    if files:
        parsed = parse_raw_lines(read_lines(spark, files), schema).persist(StorageLevel.MEMORY_AND_DISK)
        valid, quarantine = validate(parsed, schema, window, value_ranges, keep_source=True)
        if horizon_days is not None:
            kept, quarantine = _without_redeliveries(
                tables, parsed, valid, quarantine, days, schema.key[0], horizon_days
            )
            valid = kept
        valid = valid.drop("source_file", "raw_record")
    else:
        valid, quarantine = _empty_valid(spark, schema), _empty_quarantine(spark)
    skipped = {d.isoformat(): [f"{p} ({why})" for p, why in drops[d].skipped] for d in days if drops[d].skipped}
    metadata = {
        **run,
        "table": table,
        "partitions": [d.isoformat() for d in days],
        "inputs": {d.isoformat(): [str(f) for f in drops[d].files] for d in days},
        "skipped": skipped,
    }
    try:
        version = tables.replace_partitions(
            table, valid, "drop_date", days, metadata, precondition=lambda: before_commit(table)
        )
        quarantine_version = tables.replace_partitions(
            f"{table}_quarantine",
            quarantine.select(*QUARANTINE_COLUMNS),
            "drop_date",
            days,
            metadata,
            precondition=lambda: before_commit(f"{table}_quarantine"),
        )
    finally:
        for frame in (parsed, kept):
            if frame is not None:
                frame.unpersist()
    written = tables.row_count(table, version=version, partitions=days)
    rejected = tables.read(f"{table}_quarantine", version=quarantine_version, partitions=days)
    reasons = {
        r["reason"]: r["count"] for r in rejected.groupBy("reason").count().orderBy(F.desc("count")).limit(10).collect()
    }
    quarantined = tables.row_count(f"{table}_quarantine", version=quarantine_version, partitions=days)
    return {
        "table": table,
        "drops": len(drops),
        "days": days,
        "rows": written,
        "quarantined": quarantined,
        "version": version,
        "quarantine_version": quarantine_version,
        "top_reasons": reasons,
        "files": len(files),
        "skipped": [s for entries in skipped.values() for s in entries],
    }


def ingest(spark: SparkSession, tables: Tables, config: Settings | dict, dates: list[dt.date]) -> list[dict]:
    """Ingest the events (required each day unless allow_missing_drops) and users/items (optional)
    drops of the given dates. A day without a drop of a table keeps that table's partition as it is."""
    settings = as_settings(config)  # a bad value (e.g. of ingest.value_ranges) fails before anything runs
    raw_root, allow_missing = settings.paths.required("raw"), settings.ingest.allow_missing_drops
    window = DropWindow(
        allowed_lateness_hours=settings.ingest.allowed_lateness_hours,
        allowed_clock_skew_minutes=settings.ingest.allowed_clock_skew_minutes,
    )
    horizon = settings.redelivery_horizon_days  # None: upstream guarantees unique ids (and the benchmark's peer)
    value_ranges = settings.ingest.value_ranges
    run = new_run("ingest")  # before anything is logged: its id is on every line
    drops = {
        table: raw_drops.find_drops(raw_root, table, dates, required=(table == "events" and not allow_missing))
        for table in RAW_TABLES
    }
    for table in RAW_TABLES:
        absent = [d for d in dates if d not in drops[table]]
        if absent:
            shown = ", ".join(d.isoformat() for d in absent[:5]) + (
                f" and {len(absent) - 5} more" if len(absent) > 5 else ""
            )
            _log.warning("%s: no complete drop for %s: partitions left untouched", table, shown)
    run_days = sorted({d for table in RAW_TABLES for d in drops[table]})
    if not run_days:
        return []
    started = ingest_runs.start(tables, run, run_days)
    committed: list[dict] = []

    def before_commit(table: str) -> None:
        ingest_runs.check_still_owner(tables, run, run_days, started, committed, f"committing {table}")

    summary = []
    try:
        for table in RAW_TABLES:
            if not drops[table]:
                continue
            events = table == "events"
            result = ingest_table(
                spark,
                tables,
                table,
                drops[table],
                window if events else None,
                run,
                horizon if events else None,
                before_commit,
                value_ranges if events else None,
            )
            summary.append(result)
            committed += [
                {
                    "table": table,
                    "version": result["version"],
                    "days": result["days"],
                    "rows": result["rows"],
                    "quarantined": result["quarantined"],
                    "files": result["files"],
                    "skipped": len(result["skipped"]),
                },
                {
                    "table": f"{table}_quarantine",
                    "version": result["quarantine_version"],
                    "days": result["days"],
                    "rows": result["quarantined"],
                },
            ]
        event_days = sorted(drops["events"])
        failed = None
        try:
            results = check_quality(tables, settings, event_days, run, summary[0]["version"]) if event_days else []
        except QualityCheckFailed as error:  # the ingest itself is complete; the gate is downstream's
            failed = error
        ingest_runs.commit(tables, run, run_days, started, committed)
        if failed is not None:
            raise failed
        summary.append({"table": "quality", "results": results})
    except ingest_runs.IngestRaceLost:
        raise
    except ConcurrentWriteError as error:
        done = ", ".join(f"{c['table']} v{c['version']}" for c in committed) or "nothing"
        raise ConcurrentWriteError(
            f"{error} (this ingest run {run['run_id']} had committed {done} before; its "
            f"days stay incomplete until an ingest of them finishes)"
        ) from error
    return summary


def check_quality(
    tables: Tables, config: Settings | dict, dates: list[dt.date], run: dict, events_version: int
) -> list:
    """The events checks of schemas/quality.yaml on the ingested days, recorded in `quality` with the
    events version they checked; raises QualityCheckFailed (after recording) when one of severity
    error failed."""
    before = dates[0] - dt.timedelta(days=1)
    frame = tables.read("events", version=events_version, partitions=[before, *dates])
    quarantined = {
        r["drop_date"]: r["count"]
        for r in tables.read("events_quarantine", partitions=dates)
        .where(~F.col("reason").startswith("duplicate event_id"))  # benign: upstream resent it
        .groupBy("drop_date")
        .count()
        .collect()
    }  # one row per day
    results = quality_gate.check_table(tables, config, "events", frame, "drop_date", dates, quarantined)
    quality_gate.record_and_enforce(tables, results, run, {"events": events_version})
    return results


def format_summary(rows: list[dict]) -> str:
    if not rows:
        return "no complete drop for any requested day: nothing ingested"
    lines = [f"{'table':<8} {'drops':>5} {'rows':>10} {'quarantined':>11} {'version':>7}  top quarantine reasons"]
    skipped = []
    for r in rows:
        if r["table"] == "quality":
            lines.append(quality_gate.format_results(r["results"]))
            continue
        reasons = ", ".join(f"{k} ({v})" for k, v in list(r["top_reasons"].items())[:3]) or "-"
        lines.append(
            f"{r['table']:<8} {r['drops']:>5} {r['rows']:>10} {r['quarantined']:>11} {r['version']:>7}  {reasons}"
        )
        skipped += [f"skipped {r['table']} {entry}" for entry in r["skipped"]]
    return "\n".join(lines + skipped)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["ingest", "--spark-submit", *sys.argv[1:]]))
