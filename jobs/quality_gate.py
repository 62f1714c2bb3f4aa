"""Run a table's quality checks after a job wrote it, record them in the Delta table `quality`, and
stop the pipeline when a check of severity `error` failed (features/quality.py has the checks).

The `quality` table is partitioned by check_date; a job replaces the rows of the days it checked for
the tables it checked and keeps every other table's rows of those days, so reruns are idempotent and
a passing rerun clears a failure. `unpassed` is what downstream jobs (samples) ask before they use a day:
results that exist, passed, and were computed on the data they read.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.errors import QualityCheckFailed
from features.feature_spec import load_spec
from features.quality import RESULT_SCHEMA, CheckResult, results_table, run_checks, table_checks
from features.tables import PartitionVersions, Tables, partition_dates
from jobs.settings import Settings, as_settings

QUALITY_TABLE = "quality"


def check_table(
    tables: Tables,
    config: Settings | dict,
    table: str,
    frame: DataFrame,
    day_column: str,
    days: list[dt.date],
    quarantined: dict[dt.date, int] | None = None,
) -> list[CheckResult]:
    """Checks of `table` on `days`; `frame` holds those partitions and, if it exists, the day before."""
    checks = table_checks(table, as_settings(config).checks_config())
    if not checks:
        return []
    before = days[0] - dt.timedelta(days=1)
    previous = tables.row_count(table, partitions=[before]) if before in partition_dates(tables, table) else None
    if checks.get("rows_where"):  # the checks see only these rows (e.g. entities with activity in a window)
        frame = frame.where(checks["rows_where"])
        if previous is not None:
            previous = tables.read(table, partitions=[before]).where(checks["rows_where"]).count()
    ingested = partition_dates(tables, "events")
    spec = load_spec()
    windows = {f.name: f.window for f in spec.features if f.window}
    return run_checks(
        table,
        checks,
        frame,
        day_column,
        days,
        previous,
        quarantined,
        history_start=min(ingested) if ingested else None,
        windows=windows,
    )


def record(tables: Tables, results: list[CheckResult], run: dict, versions: dict[str, int] | None = None) -> int | None:
    """Replace the checked days' rows of the checked tables in `quality`; returns its version.
    `versions`: the version of each checked table the checks read (stored as table_version, so that a
    later job can tell whether the results still describe the data it reads)."""
    if not results:
        return None
    days = sorted({r.check_date for r in results})
    checked = sorted({r.table_name for r in results})
    fresh = results_table(results, run, versions or {})
    read_back = tables.exists(QUALITY_TABLE)
    if read_back:  # the other tables' rows of those days stay
        kept = tables.read_arrow(QUALITY_TABLE, partitions=days)
        kept = kept.filter(pc.invert(pc.is_in(kept["table_name"], value_set=pa.array(checked))))
        fresh = pa.concat_tables([kept.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA), fresh])
    metadata = {**run, "checked_tables": checked, "partitions": [d.isoformat() for d in days]}
    # a few rows the driver holds: written by pyarrow and committed by delta-rs (no Spark job, so it works
    # on an object-store warehouse without Spark's Hadoop jars); with rows read back, a concurrent commit
    # to those days fails it in one line instead of dropping the other writer's rows
    return tables.replace_partitions_from_arrow(
        QUALITY_TABLE, fresh, "check_date", days, metadata, reads_table=read_back
    )


def record_and_enforce(
    tables: Tables, results: list[CheckResult], run: dict, versions: dict[str, int] | None = None
) -> None:
    """What every job does with its results: record them, then stop (printing the failures) if one
    of severity error failed."""
    record(tables, results, run, versions)
    if any(r.blocking for r in results):
        print(format_results(results))
    enforce(results)


def enforce(results: list[CheckResult]) -> None:
    failed = [r for r in results if r.blocking]
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise QualityCheckFailed(
            f"{failed[0].describe()}{more}; details in the quality table "
            f"(recpipe sql \"SELECT * FROM quality WHERE status = 'fail'\")"
        )


def unpassed(tables: Tables, config: Settings | dict, table: str, days: list[dt.date], version: int) -> list[str]:
    """What keeps `days` of `table` (read at `version`) from counting as checked and passed, one line
    per day: no results recorded, results computed on other data (the partition changed since the
    version they checked), or a failed check of severity error. Empty when the table has no checks
    (none declared, or turned off by the config)."""
    if not table_checks(table, as_settings(config).checks_config()) or not days:
        return []
    rows = (
        (
            tables.read(QUALITY_TABLE, partitions=days)
            .where(F.col("table_name") == table)
            .groupBy("check_date", "table_version")
            .agg(
                F.count_if((F.col("status") == "fail") & (F.col("severity") == "error")).alias("failed"),
                F.first(
                    F.when(
                        (F.col("status") == "fail") & (F.col("severity") == "error"),
                        F.concat_ws(
                            " ",
                            "check",
                            F.when(F.col("column") != "", F.col("column")),
                            F.concat(F.lit("("), "detail", F.lit(")")),
                        ),
                    ),
                    ignorenulls=True,
                ).alias("first_failure"),
            )
            .collect()
        )
        if tables.exists(QUALITY_TABLE)
        else []
    )  # one row per day
    by_day = {row["check_date"]: row for row in rows}
    partitions = PartitionVersions(tables, table, days)
    problems = []
    for day in days:
        row = by_day.get(day)
        if row is None:
            problems.append(f"{table} {day}: no quality results recorded (the checks did not run or were lost)")
            continue
        if row["table_version"] is None:
            problems.append(f"{table} {day}: quality results do not say which version they checked")
            continue
        checked = int(row["table_version"])
        if partitions.changed(day, since=checked, now=version):
            problems.append(
                f"{table} {day}: quality results were computed on version {checked}, and the partition "
                f"changed since (read at version {version})"
            )
        elif row["failed"]:
            problems.append(
                f"{table} {day}: failed {row['first_failure']}"
                + (f" and {row['failed'] - 1} more" if row["failed"] > 1 else "")
            )
    return problems


def format_results(results: list[CheckResult]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = [f"quality: {len(results)} checks, " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    lines += [
        f"  {'FAIL' if r.severity == 'error' else 'warn'} {r.describe()}: {r.detail}"
        for r in results
        if r.status == "fail"
    ][:10]
    return "\n".join(lines)
