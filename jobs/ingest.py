"""Ingest daily raw drops into the Delta tables events/users/items and their *_quarantine twins.

    spark-submit jobs/ingest.py --config conf/demo.yaml --date 2026-01-01
    recpipe ingest --config conf/demo.yaml --start 2026-01-01 --end 2026-01-14

Each ingested day replaces its drop_date partition in one atomic commit per table, so a rerun of a
date leaves the tables with identical content.
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

if __package__ in (None, ""):  # started as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features import raw_drops
from features.errors import PipelineInputError
from features.ingest import QUARANTINE_COLUMNS, DropWindow, parse_raw_lines, validate
from features.schemas import RAW_TABLES, load_schema
from features.tables import Tables
from jobs import quality_gate
from jobs.config import get_key
from jobs.run_info import new_run


def find_drops(raw_root: str, table: str, dates: list[dt.date], required: bool) -> dict[dt.date, list[Path]]:
    """Files of each day's complete drop. A required drop that is absent or incomplete is an error
    naming its path."""
    found = {}
    for day in dates:
        files = raw_drops.drop_files(raw_root, table, day)
        if files:
            found[day] = files
        elif required:
            directory = raw_drops.drop_dir(raw_root, table, day)
            state = "is incomplete (no _SUCCESS marker)" if directory.exists() else "is missing"
            raise PipelineInputError(
                f"{table} drop for {day} {state}: {directory} (use --allow-missing to skip missing days)")
    return found


def read_lines(spark: SparkSession, files: list[Path]) -> DataFrame:
    """Raw lines with their source file and the drop date taken from the dt=YYYY-MM-DD directory."""
    lines = spark.read.text([str(f) for f in files]).select("value", F.col("_metadata.file_path").alias("source_file"))
    return lines.withColumn(
        "drop_date", F.to_date(F.regexp_extract("source_file", r"dt=(\d{4}-\d{2}-\d{2})", 1)))


def ingest_table(spark: SparkSession, tables: Tables, table: str, drops: dict[dt.date, list[Path]],
                 dates: list[dt.date], window: DropWindow | None, run: dict) -> dict:
    schema = load_schema(table)
    files = [f for day in sorted(drops) for f in drops[day]]
    if files:
        parsed = parse_raw_lines(read_lines(spark, files), schema).persist(StorageLevel.MEMORY_AND_DISK)
        valid, quarantine = validate(parsed, schema, window)
    else:
        parsed = None
        valid = spark.createDataFrame([], f"{schema.spark_ddl()}, drop_date date")
        quarantine = spark.createDataFrame([], "drop_date date, source_file string, raw_record string, reason string")
    metadata = {**run, "table": table, "partitions": [d.isoformat() for d in dates],
                "inputs": {d.isoformat(): [str(f) for f in fs] for d, fs in sorted(drops.items())}}
    try:
        version = tables.replace_partitions(table, valid, "drop_date", dates, metadata)
        quarantine_version = tables.replace_partitions(
            f"{table}_quarantine", quarantine.select(*QUARANTINE_COLUMNS), "drop_date", dates, metadata)
    finally:
        if parsed is not None:
            parsed.unpersist()
    written = tables.row_count(table, version=version, partitions=dates)
    rejected = tables.read(f"{table}_quarantine", version=quarantine_version, partitions=dates)
    reasons = {r["reason"]: r["count"] for r in rejected.groupBy("reason").count().orderBy(F.desc("count")).limit(10).collect()}
    return {"table": table, "drops": len(drops), "rows": written, "quarantined": sum(reasons.values()) if reasons else 0,
            "version": version, "quarantine_version": quarantine_version, "top_reasons": reasons}


def ingest(spark: SparkSession, tables: Tables, config: dict, dates: list[dt.date]) -> list[dict]:
    """Ingest the events (required each day) and users/items (optional) drops of the given dates."""
    raw_root = get_key(config, "paths.raw")
    allow_missing = bool(get_key(config, "ingest.allow_missing_drops", False))
    window = DropWindow(
        allowed_lateness_hours=float(get_key(config, "ingest.allowed_lateness_hours", 48)),
        allowed_clock_skew_minutes=float(get_key(config, "ingest.allowed_clock_skew_minutes", 60)),
    )
    drops = {table: find_drops(raw_root, table, dates, required=(table == "events" and not allow_missing))
             for table in RAW_TABLES}
    run = new_run("ingest")
    summary = [ingest_table(spark, tables, table, drops[table], dates, window if table == "events" else None, run)
               for table in RAW_TABLES]
    results = check_quality(tables, config, dates, run)
    summary.append({"table": "quality", "results": results})
    return summary


def check_quality(tables: Tables, config: dict, dates: list[dt.date], run: dict) -> list:
    """The events checks of schemas/quality.yaml on the ingested days, recorded in `quality`; raises
    QualityCheckFailed (after recording) when one of severity error failed."""
    before = dates[0] - dt.timedelta(days=1)
    frame = tables.read("events", partitions=[before, *dates])
    quarantined = {r["drop_date"]: r["count"] for r in tables.read("events_quarantine", partitions=dates)
                   .groupBy("drop_date").count().collect()}  # one row per day
    results = quality_gate.check_table(tables, config, "events", frame, "drop_date", dates, quarantined)
    quality_gate.record_and_enforce(tables, results, run)
    return results


def format_summary(rows: list[dict]) -> str:
    lines = [f"{'table':<8} {'drops':>5} {'rows':>10} {'quarantined':>11} {'version':>7}  top quarantine reasons"]
    for r in rows:
        if r["table"] == "quality":
            lines.append(quality_gate.format_results(r["results"]))
            continue
        reasons = ", ".join(f"{k} ({v})" for k, v in list(r["top_reasons"].items())[:3]) or "-"
        lines.append(f"{r['table']:<8} {r['drops']:>5} {r['rows']:>10} {r['quarantined']:>11} {r['version']:>7}  {reasons}")
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["ingest", "--spark-submit", *sys.argv[1:]]))
