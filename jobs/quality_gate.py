"""Run a table's quality checks after a job wrote it, record them in the Delta table `quality`, and
stop the pipeline when a check of severity `error` failed (features/quality.py has the checks).

The `quality` table is partitioned by check_date; a job replaces the rows of the days it checked for
the tables it checked and keeps every other table's rows of those days, so reruns are idempotent and
a passing rerun clears a failure. `blocking_failures` is what downstream jobs (samples) ask before
they use a day.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.errors import QualityCheckFailed
from features.feature_spec import load_spec
from features.quality import CheckResult, results_frame, run_checks, table_checks
from features.tables import Tables, partition_dates

QUALITY_TABLE = "quality"


def check_table(tables: Tables, config: dict, table: str, frame: DataFrame, day_column: str,
                days: list[dt.date], quarantined: dict[dt.date, int] | None = None) -> list[CheckResult]:
    """Checks of `table` on `days`; `frame` holds those partitions and, if it exists, the day before."""
    checks = table_checks(table, config)
    if not checks:
        return []
    before = days[0] - dt.timedelta(days=1)
    previous = tables.row_count(table, partitions=[before]) if before in partition_dates(tables, table) else None
    ingested = partition_dates(tables, "events")
    spec = load_spec()
    windows = {f.name: f.window for f in spec.features if f.window}
    return run_checks(table, checks, frame, day_column, days, previous, quarantined,
                      history_start=min(ingested) if ingested else None, windows=windows)


def record(tables: Tables, results: list[CheckResult], run: dict) -> int | None:
    """Replace the checked days' rows of the checked tables in `quality`; returns its version."""
    if not results:
        return None
    days = sorted({r.check_date for r in results})
    checked = sorted({r.table_name for r in results})
    fresh = results_frame(tables.spark, results, run)
    if tables.exists(QUALITY_TABLE):
        kept = tables.read(QUALITY_TABLE, partitions=days).where(~F.col("table_name").isin(checked))
        fresh = kept.unionByName(fresh.select(*kept.columns))
    metadata = {**run, "checked_tables": checked, "partitions": [d.isoformat() for d in days]}
    return tables.replace_partitions(QUALITY_TABLE, fresh, "check_date", days, metadata)


def record_and_enforce(tables: Tables, results: list[CheckResult], run: dict) -> None:
    """What every job does with its results: record them, then stop (printing the failures) if one
    of severity error failed."""
    record(tables, results, run)
    if any(r.blocking for r in results):
        print(format_results(results))
    enforce(results)


def enforce(results: list[CheckResult]) -> None:
    failed = [r for r in results if r.blocking]
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise QualityCheckFailed(f"{failed[0].describe()}{more}; details in the quality table "
                                 f"(recpipe sql \"SELECT * FROM quality WHERE status = 'fail'\")")


def blocking_failures(tables: Tables, table_names: list[str], days: list[dt.date]) -> list[dict]:
    """Failed error-severity checks recorded for these tables and days (empty: good to use)."""
    if not tables.exists(QUALITY_TABLE) or not days:
        return []
    frame = tables.read(QUALITY_TABLE, partitions=days).where(
        F.col("table_name").isin(table_names) & (F.col("status") == "fail") & (F.col("severity") == "error"))
    return [row.asDict() for row in frame.orderBy("check_date", "table_name", "check", "column").limit(20).collect()]


def format_results(results: list[CheckResult]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = [f"quality: {len(results)} checks, " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    lines += [f"  {'FAIL' if r.severity == 'error' else 'warn'} {r.describe()}: {r.detail}"
              for r in results if r.status == "fail"][:10]
    return "\n".join(lines)
