"""The commit point of an ingest run: the Delta table `ingest_runs`, written last.

An ingest of a day commits several tables one after the other (events, events_quarantine, users,
users_quarantine, items, items_quarantine, quality). A crash or a lost race between two of those
commits would leave a day whose lines are in neither table, or tables of one day written by different
runs. Delta has no multi-table transaction, so the run writes a manifest:

1. start: the run appends one `started` row per day to `ingest_runs` (partitioned by drop_date);
2. right before each table commit it checks that no other run has started on one of its days since its own
   start (a newer run owns the day); if one has, it stops there and says what it had committed;
3. last: it replaces the day's `ingest_runs` partition with one `committed` row per table it wrote,
   holding the version that commit created, after checking that each of those tables' day
   partitions still holds exactly the files of that version.

A day is *complete* when its committed rows exist and every table named there still has, in the day's
partition, the files of the recorded version (a comparison of file lists in the Delta log, no data
read). snapshot and samples refuse days that are not complete and name them; the next successful
ingest of the day makes it complete again (it replaces every table's partition and the manifest).
Warehouses whose events were never written by `recpipe ingest` (no ingest_runs table) are not checked.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from features.errors import PipelineInputError
from features.tables import ConcurrentWriteError, PartitionVersions, Tables

INGEST_RUNS = "ingest_runs"
STARTED, COMMITTED = "started", "committed"
DDL = (
    "run_id string, status string, table_name string, table_version long, rows long, quarantined long, "
    "files long, skipped_files long, recorded_at timestamp, drop_date date"
)


class IngestRaceLost(ConcurrentWriteError):
    """Another ingest run took over a day this run was ingesting."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def start(tables: Tables, run: dict, days: list[dt.date]) -> int:
    """Appends this run's `started` rows; returns the version that commit created."""
    rows = [(run["run_id"], STARTED, None, None, None, None, None, None, _now(), day) for day in days]
    return tables.append(
        INGEST_RUNS,
        tables.spark.createDataFrame(rows, DDL),
        "drop_date",
        {**run, "status": STARTED, "partitions": [d.isoformat() for d in days]},
    )


def newer_runs(tables: Tables, days: list[dt.date], started_version: int) -> list[str]:
    """Days of `days` whose ingest_runs partition changed since this run's start (another run started
    or committed there)."""
    runs = PartitionVersions(tables, INGEST_RUNS, days)
    return [
        day for day in sorted(runs.files()) if runs.files()[day] - runs.files(started_version).get(day, frozenset())
    ]


def check_still_owner(
    tables: Tables, run: dict, days: list[dt.date], started_version: int, committed: list[dict], next_step: str
) -> None:
    """Raises IngestRaceLost, naming what this run had committed, when another run took over."""
    taken = newer_runs(tables, days, started_version)
    if taken:
        other = _latest_run_id(tables)
        done = ", ".join(f"{c['table']} v{c['version']}" for c in committed) or "nothing"
        raise IngestRaceLost(
            f"ingest run {run['run_id']} stopped before {next_step}: another ingest run{other} started on "
            f"{', '.join(taken[:3])} after it and owns those days; this run had committed {done}, which the "
            f"other run replaces; the days count as complete once that run commits its ingest_runs rows"
        )


def _latest_run_id(tables: Tables) -> str:
    try:
        other = tables.history(INGEST_RUNS, 1)[0]["metadata"].get("run_id")
    except Exception:
        return ""
    return f" ({other})" if other else ""


def commit(tables: Tables, run: dict, days: list[dt.date], started_version: int, written: list[dict]) -> int:
    """The run's commit point. `written`: {table, version, days, rows, quarantined, files, skipped}
    for each table commit of the run. Rows of tables this run did not write on a day (an optional drop
    that was absent) are kept from the day's previous manifest."""
    check_still_owner(tables, run, days, started_version, written, "committing its ingest_runs rows")
    for entry in written:
        written_days = PartitionVersions(tables, entry["table"], entry["days"])
        changed = [day for day in entry["days"] if written_days.changed(day, since=entry["version"])]
        if changed:
            raise IngestRaceLost(
                f"ingest run {run['run_id']} did not commit its ingest_runs rows: {entry['table']} of "
                f"{changed[0]} was replaced by another writer after this run committed it (v{entry['version']}); "
                f"the day stays incomplete until an ingest of it finishes: rerun recpipe ingest --date {changed[0]}"
            )
    now = _now()
    rows = [
        (
            run["run_id"],
            COMMITTED,
            e["table"],
            int(e["version"]),
            e.get("rows"),
            e.get("quarantined"),
            e.get("files"),
            e.get("skipped"),
            now,
            day,
        )
        for e in written
        for day in e["days"]
    ]
    fresh_tables = {(r[-1], r[2]) for r in rows}
    if tables.exists(INGEST_RUNS):
        previous = (
            tables.read(INGEST_RUNS, version=started_version, partitions=days)
            .where(F.col("status") == COMMITTED)
            .collect()
        )  # a few rows per day
        rows += [tuple(r) for r in previous if (r["drop_date"], r["table_name"]) not in fresh_tables]
    frame = tables.spark.createDataFrame(rows, DDL)
    return tables.replace_partitions(
        INGEST_RUNS, frame, "drop_date", days, {**run, "status": COMMITTED, "partitions": [d.isoformat() for d in days]}
    )


def incomplete_days(
    tables: Tables, days: list[dt.date], events_version: int | None = None
) -> list[tuple[dt.date, str]]:
    """(day, why) for each events day in `days` that is not complete (see the module docstring).
    `events_version`: the events version the caller reads (default: the newest)."""
    if not tables.exists(INGEST_RUNS) or not tables.exists("events"):
        return []
    present = tables.partition_files("events", days, version=events_version)
    manifest = (
        tables.read(INGEST_RUNS, partitions=days)
        .where(F.col("status") == COMMITTED)
        .select("drop_date", "run_id", "table_name", "table_version")
        .collect()
    )  # a few rows per day
    by_day: dict[dt.date, list] = {}
    for row in manifest:
        by_day.setdefault(row["drop_date"], []).append(row)
    wanted = [d for d in days if present[d.isoformat()] or d in by_day]  # else: never ingested
    if not wanted:
        return []
    problems = []
    tables_read: dict[str, PartitionVersions] = {}
    for day in wanted:
        entries = by_day.get(day, [])
        if not any(e["table_name"] == "events" for e in entries):
            problems.append((day, "no completed ingest run wrote its events (a run crashed or lost a race)"))
            continue
        for entry in entries:
            name = entry["table_name"]
            if not tables.exists(name):
                continue
            partitions = tables_read.setdefault(name, PartitionVersions(tables, name, wanted))
            if partitions.changed(
                day, since=int(entry["table_version"]), now=events_version if name == "events" else None
            ):
                problems.append(
                    (
                        day,
                        f"{name} was replaced after ingest run {entry['run_id']} completed "
                        f"(by a run that did not complete)",
                    )
                )
                break
    return problems


def require_complete(tables: Tables, days: list[dt.date], job: str, events_version: int | None = None) -> None:
    problems = incomplete_days(tables, days, events_version)
    if problems:
        day, why = problems[0]
        more = f" (and {len(problems) - 1} more days)" if len(problems) > 1 else ""
        raise PipelineInputError(
            f"{job} refused: the ingest of {day} is incomplete: {why}{more}; rerun recpipe ingest --date {day}"
        )
